"""Flax linen interop: cell weights both ways, and any jaxseq cell inside `nn.RNN`.

Weights. `from_linen` reads the `params` collection of one Flax cell (for a bare
cell module, `variables["params"]`; inside `nn.RNN`, `variables["params"]["cell"]`)
into a jaxseq `Cell` and its params, and `to_linen` writes jaxseq params back in
Flax's layout. Flax keeps one `Dense` per gate; jaxseq fuses the gates along the
last axis in the same order, so the conversion is concatenation and splitting:

    nn.LSTMCell, nn.OptimizedLSTMCell -> lstm(H, forget_bias=0.0), fused order (i, f, g, o)
        ii if ig io: kernel [in, H]        -> w_x [in, 4H]
        hi hf hg ho: kernel [H, H], bias   -> w_h [H, 4H], b [4H]
    nn.GRUCell -> gru(H, reset_after=True), fused order (r, z, n)
        ir iz in: kernel [in, H], bias     -> w_x [in, 3H], b [3H]
        hr hz hn: kernel [H, H]            -> w_h [H, 3H]
        hn: bias [H]                       -> b_hn [H]
    nn.SimpleCell (residual=False) -> elman(H)
        i: kernel [in, H], bias            -> w_x [in, H], b [H]
        h: kernel [H, H]                   -> w_h [H, H]

Flax's LSTM carry is `(c, h)`, jaxseq's is `LSTMCarry(h, c)`: convert with
`carry_from_linen` / `carry_to_linen`. The other cells carry one array `h`.

Adapter. `LinenCell(cell)` is a `flax.linen.RNNCellBase`, so any jaxseq cell runs
inside `nn.RNN` (and anything else built on Flax's cell protocol). Its only
parameter, named `"cell"`, is the jaxseq params pytree itself, so
`variables["params"]["cell"]["cell"]` of `nn.RNN(LinenCell(cell))` can be passed
straight to `jaxseq.unroll`.

Differences between `nn.RNN(..., seq_lengths=lengths)` and
`jaxseq.unroll(..., lengths=lengths)`: both return the carry after each
sequence's last valid step, and both agree on the outputs at valid steps. Flax
does not mask, though: its cell keeps running over the padding, so its outputs at
`t >= lengths[b]` are the cell continuing over the padded inputs, whereas
`unroll` emits zeros there. For a length of 0, Flax's final carry is the carry
after the last (padded) step (it indexes step `lengths - 1 = -1`), whereas
`unroll` returns the initial carry. Flax is batch-major by default
(`time_major=False`); `unroll` is time-major, so transpose at the boundary.
"""

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxseq.cells import ACTIVATIONS, ElmanParams, GRUParams, LSTMCarry, LSTMParams
from jaxseq.cells import elman as _elman
from jaxseq.cells import gru as _gru
from jaxseq.cells import lstm as _lstm
from jaxseq.types import Carry, Cell, Params, PRNGKey

LinenParams = Mapping[str, Any]  # {"submodule": {"kernel": ..., "bias": ...}, ...}

_LSTM_GATES = ("i", "f", "g", "o")
_GRU_GATES = ("r", "z", "n")
_SUPPORTED = "nn.LSTMCell, nn.OptimizedLSTMCell, nn.GRUCell, nn.SimpleCell"


def _activation(fn: Callable) -> str | Callable:
    """The `ACTIVATIONS` name of `fn` when it is one (for readable cell names), else `fn`."""
    for name, known in ACTIVATIONS.items():
        if known is fn:
            return name
    return fn


def _leaf(linen_params: LinenParams, module: str, leaf: str, flax_cell: str) -> jax.Array:
    """Reads `linen_params[module][leaf]` with a message naming the expected layout."""
    try:
        return jnp.asarray(linen_params[module][leaf])
    except (KeyError, TypeError):
        keys = sorted(linen_params) if isinstance(linen_params, Mapping) else type(linen_params)
        hint = (
            ' (pass variables["params"], not the whole variables dict)'
            if keys == ["params"]
            else ""
        )
        raise ValueError(
            f"linen_params has no [{module!r}][{leaf!r}] expected in the params of "
            f"nn.{flax_cell}; got top-level keys {keys}{hint}"
        ) from None


def _concat(linen_params: LinenParams, modules: list[str], leaf: str, flax_cell: str):
    return jnp.concatenate([_leaf(linen_params, m, leaf, flax_cell) for m in modules], axis=-1)


def _check_layout(params: Any, hidden: int, gates: int, flax_cell: str) -> None:
    """Checks the fused shapes: `w_x [in, k*H]`, `w_h [H, k*H]`, `b [k*H]`."""
    width = gates * hidden
    w_x, w_h, b = params.w_x, params.w_h, params.b
    if (
        w_x.ndim != 2
        or w_x.shape[-1] != width
        or w_h.shape != (hidden, width)
        or b.shape != (width,)
    ):
        raise ValueError(
            f"nn.{flax_cell} params do not match features={hidden}: expected fused shapes "
            f"w_x [in, {width}], w_h {(hidden, width)}, b {(width,)}; got w_x "
            f"{tuple(w_x.shape)}, w_h {tuple(w_h.shape)}, b {tuple(b.shape)}"
        )


def _lstm_from_linen(module: nn.Module, linen_params: LinenParams) -> tuple[Cell, LSTMParams]:
    name = type(module).__name__
    params = LSTMParams(
        w_x=_concat(linen_params, [f"i{g}" for g in _LSTM_GATES], "kernel", name),
        w_h=_concat(linen_params, [f"h{g}" for g in _LSTM_GATES], "kernel", name),
        b=_concat(linen_params, [f"h{g}" for g in _LSTM_GATES], "bias", name),
    )
    _check_layout(params, module.features, 4, name)
    cell = _lstm(
        module.features,
        forget_bias=0.0,
        gate_activation=_activation(module.gate_fn),
        activation=_activation(module.activation_fn),
        dtype=module.param_dtype,
    )
    return cell, params


def _gru_from_linen(module: nn.GRUCell, linen_params: LinenParams) -> tuple[Cell, GRUParams]:
    params = GRUParams(
        w_x=_concat(linen_params, [f"i{g}" for g in _GRU_GATES], "kernel", "GRUCell"),
        w_h=_concat(linen_params, [f"h{g}" for g in _GRU_GATES], "kernel", "GRUCell"),
        b=_concat(linen_params, [f"i{g}" for g in _GRU_GATES], "bias", "GRUCell"),
        b_hn=_leaf(linen_params, "hn", "bias", "GRUCell"),
    )
    _check_layout(params, module.features, 3, "GRUCell")
    if params.b_hn.shape != (module.features,):
        raise ValueError(
            f"nn.GRUCell params['hn']['bias'] must have shape {(module.features,)} "
            f"(features), got {tuple(params.b_hn.shape)}"
        )
    cell = _gru(
        module.features,
        reset_after=True,
        gate_activation=_activation(module.gate_fn),
        activation=_activation(module.activation_fn),
        dtype=module.param_dtype,
    )
    return cell, params


def _simple_from_linen(module: nn.SimpleCell, linen_params: LinenParams):
    if module.residual:
        raise ValueError(
            "nn.SimpleCell with residual=True (h_t = f(x W + h U + b + h_{t-1})) is not "
            "supported: jaxseq.elman has no residual connection; got residual=True"
        )
    params = ElmanParams(
        w_x=_leaf(linen_params, "i", "kernel", "SimpleCell"),
        w_h=_leaf(linen_params, "h", "kernel", "SimpleCell"),
        b=_leaf(linen_params, "i", "bias", "SimpleCell"),
    )
    _check_layout(params, module.features, 1, "SimpleCell")
    cell = _elman(
        module.features, activation=_activation(module.activation_fn), dtype=module.param_dtype
    )
    return cell, params


def from_linen(cell_module: nn.RNNCellBase, linen_params: LinenParams) -> tuple[Cell, Params]:
    """Converts a Flax linen cell and its params into a jaxseq cell and params.

    The returned cell computes exactly what `cell_module` computes: the same
    activations (`gate_fn` → `gate_activation`, `activation_fn` → `activation`),
    the LSTM with `forget_bias=0.0` (the bias is in the params already), the GRU
    with `reset_after=True`. Flax's computation `dtype` is not carried over; the
    params keep their dtype. See the module docstring for the layout.

        cell, params = from_linen(module, variables["params"])
        carry, y_t = cell.step(params, carry_from_linen(flax_carry), x_t)

    Args:
      cell_module: an `nn.LSTMCell`, `nn.OptimizedLSTMCell`, `nn.GRUCell` or
        `nn.SimpleCell` (with `residual=False`); H is `cell_module.features`.
      linen_params: the `params` collection of that cell, a nested mapping
        `{submodule: {"kernel": [in or H, H], "bias": [H]}}`.

    Returns:
      `(cell, params)`: `LSTMParams(w_x [in, 4H], w_h [H, 4H], b [4H])`,
      `GRUParams(w_x [in, 3H], w_h [H, 3H], b [3H], b_hn [H])` or
      `ElmanParams(w_x [in, H], w_h [H, H], b [H])`.

    Raises:
      TypeError: for any other module type.
      ValueError: for `SimpleCell(residual=True)`, missing submodules or shapes
        that do not match `features`.
    """
    if isinstance(cell_module, nn.LSTMCell | nn.OptimizedLSTMCell):
        return _lstm_from_linen(cell_module, linen_params)
    if isinstance(cell_module, nn.GRUCell):
        return _gru_from_linen(cell_module, linen_params)
    if isinstance(cell_module, nn.SimpleCell):
        return _simple_from_linen(cell_module, linen_params)
    raise TypeError(f"cell_module must be one of {_SUPPORTED}, got {type(cell_module).__name__}")


def _split(w: jax.Array, num: int) -> list[jax.Array]:
    return jnp.split(w, num, axis=-1)


def _lstm_to_linen(params: LSTMParams, hidden: int) -> dict[str, dict[str, jax.Array]]:
    if params.w_peep is not None:
        raise ValueError(
            "LSTM params with peephole connections (w_peep is not None, peephole=True) are "
            "not supported: Flax's LSTMCell has no peepholes"
        )
    if params.w_x.shape[-1] != 4 * hidden:
        raise ValueError(
            "LSTM params without a forget-gate block (forget_gate=False or coupled=True: "
            f"w_x has {params.w_x.shape[-1]} = 3*{hidden} columns, Flax needs 4*{hidden}) "
            "are not supported: Flax's LSTMCell always has a forget gate"
        )
    _check_layout(params, hidden, 4, "LSTMCell")
    blocks = zip(_LSTM_GATES, _split(params.w_x, 4), _split(params.w_h, 4), _split(params.b, 4))
    out: dict[str, dict[str, jax.Array]] = {}
    for g, w_x, w_h, b in blocks:
        out[f"i{g}"] = {"kernel": w_x}
        out[f"h{g}"] = {"kernel": w_h, "bias": b}
    return out


def _gru_to_linen(params: GRUParams, hidden: int) -> dict[str, dict[str, jax.Array]]:
    if params.b_hn is None:
        what = (
            "without the reset gate (reset_gate=False)"
            if params.w_x.shape[-1] == 2 * hidden
            else "with the reset before the recurrent matmul (reset_after=False, b_hn is None)"
        )
        raise ValueError(
            f"GRU params {what} are not supported: Flax's GRUCell is the reset_after=True "
            "form with a reset gate"
        )
    _check_layout(params, hidden, 3, "GRUCell")
    blocks = zip(_GRU_GATES, _split(params.w_x, 3), _split(params.w_h, 3), _split(params.b, 3))
    out: dict[str, dict[str, jax.Array]] = {}
    for g, w_x, w_h, b in blocks:
        out[f"i{g}"] = {"kernel": w_x, "bias": b}
        out[f"h{g}"] = {"kernel": w_h}
    out["hn"]["bias"] = params.b_hn
    return out


def to_linen(cell: Cell, params: Params) -> dict[str, dict[str, jax.Array]]:
    """Converts jaxseq cell params into the `params` collection of a Flax cell.

    The Flax class follows from the params type: `LSTMParams` → `nn.LSTMCell` or
    `nn.OptimizedLSTMCell` (same layout), `GRUParams` → `nn.GRUCell`,
    `ElmanParams` → `nn.SimpleCell`. Only weights are converted: build the Flax
    cell with `features=cell.hidden_size` and the same activations as `cell`
    (Flax defaults: sigmoid gates, tanh otherwise), then

        module.apply({"params": to_linen(cell, params)}, carry_to_linen(carry), x_t)

    equals `cell.step(params, carry, x_t)` up to the carry order.

    Args:
      cell: the jaxseq `Cell` the params belong to (for H and messages).
      params: `LSTMParams` (no peepholes, with the forget gate: w_x `[in, 4H]`),
        `GRUParams` (reset_after=True with the reset gate: `b_hn [H]`) or
        `ElmanParams`.

    Returns:
      A nested dict `{submodule: {"kernel": [in or H, H], "bias": [H]}}` laid out
      as in the module docstring.

    Raises:
      TypeError: for any other params type.
      ValueError: for unsupported variants (LSTM peepholes, LSTM without a
        forget gate or with coupled gates, GRU with reset_after=False or without
        the reset gate) or shapes that do not match `cell.hidden_size`.
    """
    if not isinstance(params, LSTMParams | GRUParams | ElmanParams):
        raise TypeError(
            "params must be LSTMParams, GRUParams or ElmanParams (the cells Flax has), "
            f"got {type(params).__name__} for {cell.name}"
        )
    hidden = cell.hidden_size
    if params.w_h.shape[0] != hidden:
        raise ValueError(
            f"params do not belong to {cell.name}: w_h has {params.w_h.shape[0]} rows, "
            f"expected hidden_size={hidden}"
        )
    if isinstance(params, LSTMParams):
        return _lstm_to_linen(params, hidden)
    if isinstance(params, GRUParams):
        return _gru_to_linen(params, hidden)
    _check_layout(params, hidden, 1, "SimpleCell")
    return {"i": {"kernel": params.w_x, "bias": params.b}, "h": {"kernel": params.w_h}}


def _is_array(x: Any) -> bool:
    return isinstance(x, jax.Array | np.ndarray)


def carry_from_linen(carry: Any) -> Carry:
    """Converts a Flax cell carry into the jaxseq carry.

    Args:
      carry: Flax's LSTM carry `(c, h)`, each `[*batch, H]`, or the single array
        `h: [*batch, H]` of `GRUCell` / `SimpleCell`.

    Returns:
      `LSTMCarry(h=h, c=c)` for a pair, the array itself otherwise.

    Raises:
      TypeError: for an `LSTMCarry` (already converted; reading it as `(c, h)`
        would swap the states) or any other structure.
    """
    if isinstance(carry, LSTMCarry):
        raise TypeError("carry is already a jaxseq LSTMCarry(h, c); expected Flax's (c, h) tuple")
    if isinstance(carry, tuple) and len(carry) == 2 and all(map(_is_array, carry)):
        c, h = carry
        return LSTMCarry(h=h, c=c)
    if _is_array(carry):
        return carry
    raise TypeError(
        f"carry must be Flax's LSTM (c, h) tuple of arrays or an array, got {type(carry).__name__}"
    )


def carry_to_linen(carry: Carry) -> Any:
    """Converts a jaxseq carry into the Flax cell carry.

    Args:
      carry: `LSTMCarry(h, c)`, each `[*batch, H]`, or an array `h: [*batch, H]`.

    Returns:
      Flax's LSTM carry `(c, h)` for an `LSTMCarry`, the array itself otherwise.

    Raises:
      TypeError: for any other structure (a plain tuple is ambiguous: pass an
        `LSTMCarry`).
    """
    if isinstance(carry, LSTMCarry):
        return (carry.c, carry.h)
    if _is_array(carry):
        return carry
    raise TypeError(f"carry must be an LSTMCarry or an array, got {type(carry).__name__}")


class LinenCell(nn.RNNCellBase):
    """Runs a jaxseq `Cell` as a Flax linen cell, e.g. inside `nn.RNN`.

    Flax's cell protocol is a class hierarchy, so this adapter subclasses
    `nn.RNNCellBase` (the one class in jaxseq that does); it only forwards to the
    wrapped cell's pure functions:

        rnn = nn.RNN(LinenCell(jaxseq.lstm(8)))      # batch-major [B, T, in]
        variables = rnn.init(key, xs)
        params = variables["params"]["cell"]["cell"]  # jaxseq LSTMParams
        rnn.apply(variables, xs) == jaxseq.unroll(cell, params, xs.swapaxes(0, 1))[1].swapaxes(0, 1)

    The carry is the jaxseq carry (`LSTMCarry(h, c)` for the LSTM, not Flax's
    `(c, h)`).

    Attributes:
      cell: the jaxseq `Cell`; its params are the single Flax param `"cell"`,
        made by `cell.init(key, in)` with `in = x_t.shape[-1]`.
    """

    cell: Cell

    @nn.compact
    def __call__(
        self, carry: Carry, x_t: Float[Array, "*batch in"]
    ) -> tuple[Carry, Float[Array, "*batch hidden"]]:
        """One step: `cell.step(params, carry, x_t)`.

        Args:
          carry: the jaxseq carry, leaves `[*batch, H]`.
          x_t: `[*batch, in]`.

        Returns:
          `(carry, y_t)` with `y_t: [*batch, H]`.
        """
        params = self.param("cell", lambda key: self.cell.init(key, x_t.shape[-1]))
        return self.cell.step(params, carry, x_t)

    @nn.nowrap
    def initialize_carry(self, rng: PRNGKey, input_shape: tuple[int, ...]) -> Carry:
        """The wrapped cell's initial carry for inputs of shape `input_shape`.

        Args:
          rng: a PRNG key (used only to trace `cell.init` for shapes and dtypes).
          input_shape: the shape of one step's input, `(*batch, in)`.

        Returns:
          `cell.initial_carry(params, batch)`, leaves `[*batch, H]`.
        """
        abstract = jax.eval_shape(lambda k: self.cell.init(k, input_shape[-1]), rng)
        return self.cell.initial_carry(abstract, tuple(input_shape[:-1]))

    @property
    def num_feature_axes(self) -> int:
        """Cells act on the last axis only."""
        return 1
