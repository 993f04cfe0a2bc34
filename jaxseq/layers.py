"""Sequence layers built on `unroll`: stacked and bidirectional RNNs."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxseq import _checks
from jaxseq.types import Carry, Cell, Params, PRNGKey
from jaxseq.unroll import unroll

LayerParams = tuple[tuple[Params, ...], ...]  # params[layer][direction]


class Layer(NamedTuple):
    """A sequence layer as pure functions; see `rnn`.

    Attributes:
      cell: the cell used in every layer and direction.
      num_layers: number of stacked layers L.
      num_directions: 1, or 2 when bidirectional.
      dropout: dropout rate on the outputs of every layer but the last.
      init: `(key, input_size) -> params`, with `params[layer][direction]`.
      apply: `(params, xs, carry=None, *, lengths=None, key=None, ...) -> (ys, final)`.
    """

    cell: Cell
    num_layers: int
    num_directions: int
    dropout: float
    init: Callable[[PRNGKey, int], LayerParams]
    apply: Callable[..., tuple[jax.Array, Carry]]

    @property
    def output_size(self) -> int:
        return self.num_directions * self.cell.hidden_size


def _dropout(key: PRNGKey, rate: float, x: jax.Array) -> jax.Array:
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def _check_stacked_carry(cell, params, carry, count, batch_shape) -> None:
    expected = jax.eval_shape(lambda p: cell.initial_carry(p, batch_shape), params)
    for leaf, exp in zip(jax.tree.leaves(carry), jax.tree.leaves(expected), strict=False):
        want = (count, *exp.shape)
        if tuple(leaf.shape) != want:
            raise ValueError(
                f"carry leaves must have shape {want} ([layers*directions, *batch, hidden]), "
                f"got {tuple(leaf.shape)}"
            )
    if jax.tree.structure(carry) != jax.tree.structure(expected):
        raise ValueError(
            f"carry must have the structure {jax.tree.structure(expected)}, "
            f"got {jax.tree.structure(carry)}"
        )


def rnn(cell: Cell, *, num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0):
    """A stacked, optionally bidirectional recurrent layer (PyTorch `nn.LSTM` semantics).

        ys_0 = xs
        ys_l = concat(fwd_l(ys_{l-1}), bwd_l(ys_{l-1}))    # or fwd_l only
        ys_l = dropout(ys_l)                                 # for l < L, when key is given

    `apply(params, xs, carry=None, *, lengths=None, key=None, **unroll_options)
    -> (ys, final)`, with any of `jaxseq.unroll`'s options (unroll, remat,
    truncate, method, bptt, hoist):
      xs: `[T, *batch, in]`; ys: `[T, *batch, num_directions * H]`.
      carry / final: the cell's carry with every leaf stacked to
        `[num_layers * num_directions, *batch, H]`, index `layer * D + direction`
        — `(h_n, c_n)` for an LSTM, `h_n` otherwise, as PyTorch returns them.
      lengths: int `[*batch]`; the backward direction reads each sequence from
        its own last valid step (packed-sequence semantics).
      key: PRNG key for dropout between layers; dropout is applied only when a
        key is given (training) and `dropout > 0`.

    Mixed precision is the cell's: with `cell = lstm(H, compute_dtype=jnp.bfloat16)`
    every layer's matrix products take bfloat16 operands (float32 accumulation),
    while `ys`, `final` and the params stay float32; `xs` may have any floating
    dtype (it is cast to the params').

    Args:
      cell: the `Cell` of every layer and direction.
      num_layers: number of stacked layers.
      bidirectional: add a backward direction to every layer.
      dropout: dropout rate in [0, 1) between layers.

    Returns:
      A `Layer`.
    """
    _checks.check_positive_int("num_layers", num_layers)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
    num_dirs = 2 if bidirectional else 1

    def init(key: PRNGKey, input_size: int) -> LayerParams:
        _checks.check_positive_int("input_size", input_size)
        keys = jax.random.split(key, num_layers * num_dirs).reshape(num_layers, num_dirs)
        params = []
        for layer in range(num_layers):
            size = input_size if layer == 0 else num_dirs * cell.hidden_size
            params.append(tuple(cell.init(keys[layer, d], size) for d in range(num_dirs)))
        return tuple(params)

    def apply(
        params: LayerParams,
        xs: Float[Array, "time *batch in"],
        carry: Carry | None = None,
        *,
        lengths: Int[Array, "*batch"] | None = None,
        key: PRNGKey | None = None,
        **unroll_options: Any,
    ) -> tuple[jax.Array, Carry]:
        if len(params) != num_layers or any(len(p) != num_dirs for p in params):
            raise ValueError(
                f"params must be [num_layers={num_layers}][num_directions={num_dirs}] cell "
                f"params, got {len(params)} layers"
            )
        if carry is not None:
            batch_shape = tuple(xs.shape[1:-1])
            _check_stacked_carry(cell, params[0][0], carry, num_layers * num_dirs, batch_shape)
        finals, inputs = [], xs
        for layer in range(num_layers):
            outputs = []
            for d in range(num_dirs):
                index = layer * num_dirs + d
                c0 = None if carry is None else jax.tree.map(lambda a, i=index: a[i], carry)
                c, ys = unroll(
                    cell,
                    params[layer][d],
                    inputs,
                    c0,
                    lengths=lengths,
                    reverse=d == 1,
                    **unroll_options,
                )
                finals.append(c)
                outputs.append(ys)
            inputs = jnp.concatenate(outputs, axis=-1) if num_dirs == 2 else outputs[0]
            if key is not None and dropout > 0.0 and layer < num_layers - 1:
                inputs = _dropout(jax.random.fold_in(key, layer), dropout, inputs)
        final = jax.tree.map(lambda *leaves: jnp.stack(leaves), *finals)
        return inputs, final

    return Layer(cell, num_layers, num_dirs, dropout, init, apply)
