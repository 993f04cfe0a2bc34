"""Non-recurrent baselines from the lecture's recap: an MLP on the flattened window and a 1-D CNN.

Both take the same `apply(params, xs, lengths=None, *, key=None) -> [*batch, O]`
as `classifier`, so an experiment can switch with `--model=mlp|cnn|rnn` and
show what sequential structure buys.
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxseq import _checks, initializers
from jaxseq.models import _dense, _sequence
from jaxseq.types import PRNGKey

PADDINGS = ("same", "valid")


def _hidden_stack(key: PRNGKey, sizes: Sequence[int]) -> tuple[_dense.DenseParams, ...]:
    keys = jax.random.split(key, max(len(sizes) - 1, 1))
    return tuple(_dense.dense(k, m, n) for k, m, n in zip(keys, sizes[:-1], sizes[1:]))


def _hidden_apply(params, x, act, rate, key) -> jax.Array:
    for i, p in enumerate(params):
        x = act(_dense.dense_apply(p, x))
        x = _dense.dropout(None if key is None else jax.random.fold_in(key, i), rate, x)
    return x


def mlp(
    hidden_sizes: Sequence[int],
    output_size: int,
    *,
    activation: str | _dense.Activation = "relu",
    seq_len: int,
    dropout: float = 0.0,
) -> _sequence.Model:
    """An MLP on the whole (fixed-length, zero-padded) window, flattened.

        z_0 = flatten(mask ⊙ xs)           # [*batch, T·D], padded steps zeroed
        z_k = dropout(f(z_{k-1} W_k + b_k)) # one per hidden size
        out = z_K W + b                    # [*batch, output_size]

    It has a weight for every (step, feature) pair: no sharing across time.

    Args:
      hidden_sizes: widths of the hidden layers (may be empty: a linear model).
      output_size: O.
      activation: f, a key of `jaxseq.cells.ACTIVATIONS` or a callable.
      seq_len: T; `apply` requires `xs.shape[0] == seq_len`.
      dropout: rate after every hidden layer (only when `apply` gets a key).

    Returns:
      A `Model`; params `{"hidden": tuple of DenseParams, "readout": DenseParams}`.
    """
    hidden_sizes = tuple(hidden_sizes)
    for size in hidden_sizes:
        _checks.check_positive_int("hidden_sizes", size)
    _checks.check_positive_int("output_size", output_size)
    _checks.check_positive_int("seq_len", seq_len)
    _dense.check_rate("dropout", dropout)
    act = _dense.activation("activation", activation)

    def init(key: PRNGKey, input_size: int) -> dict:
        _checks.check_positive_int("input_size", input_size)
        k_hidden, k_out = jax.random.split(key)
        sizes = (seq_len * input_size, *hidden_sizes)
        return {
            "hidden": _hidden_stack(k_hidden, sizes),
            "readout": _dense.dense(k_out, sizes[-1], output_size),
        }

    def apply(
        params: dict,
        xs: Float[Array, "time *batch in"],
        lengths: Int[Array, "*batch"] | None = None,
        *,
        key: PRNGKey | None = None,
    ) -> Float[Array, "*batch out"]:
        first = params["hidden"][0] if params["hidden"] else params["readout"]
        _sequence.check_features("xs", xs, first.w.shape[0] // seq_len)
        if xs.shape[0] != seq_len:
            raise ValueError(f"xs must have seq_len={seq_len} time steps, got {xs.shape[0]}")
        if lengths is not None:
            full = _sequence.lengths_or_full(lengths, seq_len, tuple(xs.shape[1:-1]))
            xs = _sequence.zero_pads(xs, _sequence.time_mask(full, seq_len))
        z = jnp.moveaxis(xs, 0, -2)
        z = z.reshape((*z.shape[:-2], -1))
        return _dense.dense_apply(
            params["readout"], _hidden_apply(params["hidden"], z, act, dropout, key)
        )

    return _sequence.Model(init, apply)


class ConvParams(NamedTuple):
    """A 1-D convolution over time: kernel `w: [width, in, out]` (cross-correlation), bias `b`."""

    w: Float[Array, " width in out"]
    b: Float[Array, " out"]


def conv1d(params: ConvParams, xs: Float[Array, "time n in"], padding: str) -> jax.Array:
    """`ys[t] = Σ_k xs[t + k − pad_left] @ w[k] + b`, time-major `[T, N, in] -> [T', N, out]`.

    "same": T' = T, zero padding of (width−1)//2 steps before and width//2 after;
    "valid": T' = T − width + 1, windows inside the sequence only.
    """
    ys = jax.lax.conv_general_dilated(
        xs, params.w, (1,), padding.upper(), dimension_numbers=("WNC", "WIO", "WNC")
    )
    return ys + params.b.reshape((1, 1, -1))


def _conv_features(params, xs, lengths, act, padding) -> tuple[jax.Array, jax.Array]:
    """Runs the conv stack, masking padded steps after every layer; returns (ys, lengths)."""
    batch_shape = xs.shape[1:-1]
    ys = _sequence.zero_pads(xs, _sequence.time_mask(lengths, xs.shape[0]))
    ys = ys.reshape((xs.shape[0], -1, xs.shape[-1]))
    flat = lengths.reshape(-1)
    for p in params:
        ys = act(conv1d(p, ys, padding))
        if padding == "valid":
            flat = jnp.maximum(flat - (p.w.shape[0] - 1), 0)
        ys = _sequence.zero_pads(ys, _sequence.time_mask(flat, ys.shape[0]))
    return ys.reshape((ys.shape[0], *batch_shape, ys.shape[-1])), flat.reshape(batch_shape)


def cnn1d(
    channels: Sequence[int] = (32, 32),
    kernel_size: int = 3,
    output_size: int | None = None,
    *,
    activation: str | _dense.Activation = "relu",
    pooling: str = "max",
    hidden: int | None = None,
    padding: str = "same",
    dropout: float = 0.0,
) -> _sequence.Model:
    """A 1-D CNN: filters convolved over time, nonlinearity, global pooling, dense readout.

        a_0 = mask ⊙ xs                                    # padded steps zeroed
        a_k = mask_k ⊙ f(conv1d(a_{k-1}, W_k) + b_k)       # one per entry of `channels`
        z = pool_{t valid}(a_K)                            # global max / mean over time
        out = dropout([f(z W_h + b_h)]) W + b              # hidden layer only with `hidden`

    Padding "same" keeps T steps (zero padding; a valid step's window may read
    the zeros after its sequence's end, never padded values) and keeps lengths;
    "valid" shrinks every layer by `kernel_size − 1` steps, and step t stays
    valid while its whole window lies within the sequence (length − k + 1
    valid steps; a shorter sequence pools to zeros). Either way changing the
    values at padded steps never changes the output. The kernels use Glorot
    uniform (fan-in = width·in), biases zeros; `conv1d` is a cross-correlation.

    Args:
      channels: output channels of each conv layer (at least one).
      kernel_size: width of every filter, in time steps.
      output_size: O (required; keyword or third positional argument).
      activation: f, a key of `jaxseq.cells.ACTIVATIONS` or a callable.
      pooling: "max" or "mean" over the valid steps.
      hidden: width of an optional hidden dense layer before the readout.
      padding: "same" (default) or "valid".
      dropout: rate on the pooled (or hidden) features (only when `apply` gets a key).

    Returns:
      A `Model`; params `{"conv": tuple of ConvParams, "hidden": tuple of
      DenseParams (empty without `hidden`), "readout": DenseParams}`.
    """
    channels = tuple(channels)
    if not channels:
        raise ValueError("channels must hold at least one conv layer, got ()")
    for size in channels:
        _checks.check_positive_int("channels", size)
    _checks.check_positive_int("kernel_size", kernel_size)
    _checks.check_positive_int("output_size", output_size)
    _checks.check_option("pooling", pooling, ("max", "mean"))
    if hidden is not None:
        _checks.check_positive_int("hidden", hidden)
    _checks.check_option("padding", padding, PADDINGS)
    _dense.check_rate("dropout", dropout)
    act = _dense.activation("activation", activation)
    min_steps = 1 + (kernel_size - 1) * len(channels) if padding == "valid" else 1
    glorot = initializers.glorot_uniform()

    def init(key: PRNGKey, input_size: int) -> dict:
        _checks.check_positive_int("input_size", input_size)
        k_conv, k_hidden, k_out = jax.random.split(key, 3)
        sizes = (input_size, *channels)
        keys = jax.random.split(k_conv, len(channels))
        conv = tuple(
            ConvParams(glorot(k, (kernel_size, m, n), jnp.float32), jnp.zeros((n,), jnp.float32))
            for k, m, n in zip(keys, sizes[:-1], sizes[1:])
        )
        dense_sizes = (channels[-1],) if hidden is None else (channels[-1], hidden)
        return {
            "conv": conv,
            "hidden": _hidden_stack(k_hidden, dense_sizes),
            "readout": _dense.dense(k_out, dense_sizes[-1], output_size),
        }

    def apply(
        params: dict,
        xs: Float[Array, "time *batch in"],
        lengths: Int[Array, "*batch"] | None = None,
        *,
        key: PRNGKey | None = None,
    ) -> Float[Array, "*batch out"]:
        _sequence.check_features("xs", xs, params["conv"][0].w.shape[1])
        if xs.shape[0] < min_steps:
            raise ValueError(
                f"xs must have at least {min_steps} time steps for {len(channels)} 'valid' "
                f"convolutions of width {kernel_size}, got {xs.shape[0]}"
            )
        full = _sequence.lengths_or_full(lengths, xs.shape[0], tuple(xs.shape[1:-1]))
        ys, out_lengths = _conv_features(params["conv"], xs, full, act, padding)
        z = _sequence.pool(ys, out_lengths, pooling)
        if params["hidden"]:  # dropout after the hidden layer
            z = _hidden_apply(params["hidden"], z, act, dropout, key)
        else:
            z = _dense.dropout(key, dropout, z)
        return _dense.dense_apply(params["readout"], z)

    return _sequence.Model(init, apply)
