"""Gate activations along a trajectory and how saturated they are.

The cells keep their settings in closures, so the gates are recomputed here
from the params, the trajectory and the settings each cell writes into its
`name` (`lstm(..., peephole=False, ..., gate_activation='sigmoid', ...)`),
with the gate order each cell documents. Supported: `lstm` (i, f, g, o; no f
with `forget_gate=False` or `coupled=True`), `gru` (r, z, n; no r with
`reset_gate=False`), `mingru` (z) and `minlstm` (f, i). Anything else (Elman,
LRU, a cell whose name names no supported family, activations given as
callables) raises a `ValueError`; so a wrapper that changes a cell's step
should also change its name (the diagnostics' own wrappers do).
"""

import ast
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxseq.cells import ACTIVATIONS
from jaxseq.diagnostics import _trajectory
from jaxseq.types import Carry, Cell, Params

SUPPORTED = ("lstm", "gru", "mingru", "minlstm")

# The range of each bounded activation; saturation is measured relative to it.
RANGES: dict[str, tuple[float, float]] = {
    "sigmoid": (0.0, 1.0),
    "hard_sigmoid": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "hard_tanh": (-1.0, 1.0),
    "softsign": (-1.0, 1.0),
}


class GateSaturation(NamedTuple):
    """Saturation of one gate, over the valid steps, the batch and the units.

    Attributes:
      low: fraction of activations in the bottom of their range (σ < 0.05).
      high: fraction in the top of their range (σ > 0.95).
      mean: mean activation.
    """

    low: Float[Array, ""]
    high: Float[Array, ""]
    mean: Float[Array, ""]


def _settings(cell: Cell) -> tuple[str, dict]:
    """The family and the keyword settings written in `cell.name`, activations checked."""
    family, _, rest = cell.name.partition("(")
    if family not in SUPPORTED:
        raise ValueError(f"gate statistics support the gated cells {SUPPORTED}, got {cell.name!r}")
    settings = {"gate_activation": "sigmoid", "activation": "tanh"}  # the factories' defaults
    for key, text in re.findall(r"(\w+)=('[^']*'|[^,()]+)", rest):
        try:
            settings[key] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            settings[key] = text.strip()  # e.g. the repr of a callable
    if family in ("mingru", "minlstm"):
        settings["gate_activation"] = "sigmoid"  # fixed in the cells
    for key in ("gate_activation", "activation"):
        if settings[key] not in ACTIVATIONS:
            raise ValueError(
                f"gate statistics need a named {key} (one of {tuple(ACTIVATIONS)}), "
                f"got {settings[key]!r} in {cell.name!r}"
            )
    return family, settings


def _gate_names(cell: Cell, family: str, settings: dict, params) -> tuple[str, ...]:
    """The documented gate order (candidates included), checked against the fused weights."""
    if family == "lstm":
        has_f = settings.get("forget_gate", True) and not settings.get("coupled", False)
        gates, fused = ("i", "f", "g", "o") if has_f else ("i", "g", "o"), params.w_h
    elif family == "gru":
        gates = ("r", "z", "n") if settings.get("reset_gate", True) else ("z", "n")
        fused = params.w_h
    else:
        gates = ("z", "h") if family == "mingru" else ("f", "i", "h")
        fused = params.w_x
    if fused.shape[-1] != len(gates) * cell.hidden_size:
        raise ValueError(
            f"{cell.name!r} has gates {gates} of width {cell.hidden_size}, but its fused "
            f"weights have {fused.shape[-1]} columns"
        )
    return gates


def _lstm(gates, settings, params, xp, before, after) -> dict:
    sigma, phi = ACTIVATIONS[settings["gate_activation"]], ACTIVATIONS[settings["activation"]]
    pre = dict(zip(gates, jnp.split(xp + before.h @ params.w_h, len(gates), axis=-1)))
    if params.w_peep is not None:  # i, f see C_{t-1}; o sees C_t
        peep = [p.reshape((1,) * (xp.ndim - 1) + p.shape) for p in params.w_peep]
        pre["i"] = pre["i"] + peep[0] * before.c
        if "f" in gates:
            pre["f"] = pre["f"] + peep[1] * before.c
        pre["o"] = pre["o"] + peep[2] * after.c
    return {g: (phi if g == "g" else sigma)(pre[g]) for g in gates}


def _gru(gates, settings, params, xp, before, hidden: int) -> dict:
    sigma, phi = ACTIVATIONS[settings["gate_activation"]], ACTIVATIONS[settings["activation"]]
    x = dict(zip(gates, jnp.split(xp, len(gates), axis=-1)))
    values = {}
    if "r" in gates and not settings.get("reset_after", True):
        h_r, h_z = jnp.split(before @ params.w_h[:, : 2 * hidden], 2, axis=-1)
        values["r"] = sigma(x["r"] + h_r)
        h_n = (values["r"] * before) @ params.w_h[:, 2 * hidden :]
    else:
        h = dict(zip(gates, jnp.split(before @ params.w_h, len(gates), axis=-1)))
        h_z, h_n = h["z"], h["n"]
        if "r" in gates:
            values["r"] = sigma(x["r"] + h["r"])
            b_hn = params.b_hn.reshape((1,) * (h_n.ndim - 1) + params.b_hn.shape)
            h_n = values["r"] * (h_n + b_hn)
    values["z"] = sigma(x["z"] + h_z)
    values["n"] = phi(x["n"] + h_n)
    return {g: values[g] for g in gates}


def _gates(cell, params, xs, carry) -> tuple[dict, dict]:
    """`({gate: activations [T, *batch, H]}, {gate: activation name})`."""
    family, settings = _settings(cell)
    gates = _gate_names(cell, family, settings, params)
    carry = _trajectory.initial_carry(cell, params, xs, carry)
    xp = cell.project(params, xs)
    candidate = {"lstm": "g", "gru": "n"}.get(family)
    kinds = {g: settings["activation" if g == candidate else "gate_activation"] for g in gates}
    if family in ("mingru", "minlstm"):  # gates from the input alone; h̃ is linear, not a gate
        pre = dict(zip(gates, jnp.split(xp, len(gates), axis=-1)))
        return {g: jax.nn.sigmoid(pre[g]) for g in gates[:-1]}, kinds
    before, after = (
        _trajectory.unflatten(flat, carry)
        for flat in _trajectory.trajectory(cell, params, xs, carry)
    )
    if family == "lstm":
        return _lstm(gates, settings, params, xp, before, after), kinds
    return _gru(gates, settings, params, xp, before, cell.hidden_size), kinds


def gate_activations(
    cell: Cell,
    params: Params,
    xs: Float[Array, "time *batch in"],
    carry: Carry | None = None,
) -> dict[str, Float[Array, "time *batch hidden"]]:
    """Every gate's activation at every step of the trajectory `cell` takes on `xs`.

    Args:
      cell: a gated `Cell` (`lstm`, `gru`, `mingru`, `minlstm`; see the module doc).
      params: its parameters.
      xs: inputs `[T, *batch, in]`.
      carry: initial state (default `cell.initial_carry`).

    Returns:
      `{gate: [T, *batch, H]}` in the cell's gate order (a dict returned through
      `jit` comes back with sorted keys): LSTM i, f, g, o (g the candidate Ĉ_t);
      GRU r, z, n (n the candidate); minGRU z; minLSTM f, i (before their
      normalisation by f + i).

    Raises:
      ValueError: for other cells, or activations given as callables.
    """
    values, _ = _gates(cell, params, xs, carry)
    return values


def gate_saturation(
    cell: Cell,
    params: Params,
    xs: Float[Array, "time *batch in"],
    carry: Carry | None = None,
    *,
    lengths: Int[Array, "*batch"] | None = None,
    low: float = 0.05,
    high: float = 0.95,
) -> dict[str, GateSaturation]:
    """Fraction of saturated activations per gate (near 0 or near 1 for a sigmoid).

    Each activation a is first mapped to u = (a − lo)/(hi − lo) in [0, 1] by its
    range [lo, hi] (sigmoid [0, 1], tanh [−1, 1], ...); then `low` is the fraction
    with u < `low` and `high` the fraction with u > `high`. For a sigmoid gate
    that is σ < 0.05 and σ > 0.95; for a tanh candidate, below −0.9 and above
    0.9. Gates with an unbounded activation (relu, identity) are left out.

    Args:
      cell: a gated `Cell` (see `gate_activations`).
      params: its parameters.
      xs: inputs `[T, *batch, in]`.
      carry: initial state (default `cell.initial_carry`).
      lengths: optional valid lengths, int `[*batch]`; padded steps are not counted.
      low: lower threshold on the [0, 1] scale.
      high: upper threshold on the [0, 1] scale.

    Returns:
      `{gate: GateSaturation(low, high, mean)}`, each field a scalar.
    """
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"thresholds must satisfy 0 <= low <= high <= 1, got {low=}, {high=}")
    values, kinds = _gates(cell, params, xs, carry)
    valid = _trajectory.valid_steps(lengths, xs)
    stats = {}
    for gate, a in values.items():
        if kinds[gate] not in RANGES:
            continue
        lo, hi = RANGES[kinds[gate]]
        u = (a - lo) / (hi - lo)
        weight = jnp.ones_like(u) if valid is None else jnp.broadcast_to(valid[..., None], u.shape)
        weight = weight.astype(u.dtype)  # 1 on valid steps, 0 on padded ones
        count = jnp.maximum(jnp.sum(weight), 1.0)
        stats[gate] = GateSaturation(
            low=jnp.sum(jnp.where(u < low, weight, 0.0)) / count,
            high=jnp.sum(jnp.where(u > high, weight, 0.0)) / count,
            mean=jnp.sum(a * weight) / count,
        )
    return stats
