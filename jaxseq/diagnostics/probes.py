"""Gradient flow through time: ‖∂L/∂carry_t‖ with zero probes, and ‖∂h_T/∂x_t‖.

Time indices follow `unroll`: `carry_t` is the state after reading `xs[t]` (the
state `ys[t]` comes from), t = 0 … T−1.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxseq.diagnostics import _trajectory
from jaxseq.types import Carry, Cell, Params
from jaxseq.unroll import unroll


class StateGradNorms(NamedTuple):
    """What `state_grad_norms` measures in its one backward pass.

    Attributes:
      loss: the scalar `loss_fn(ys)`, exactly as without probes.
      norm: `[T, *batch]`, ‖∂L/∂carry_t‖₂ over all carry leaves of example b.
      leaf_norms: the carry's structure with a `[T, *batch]` norm per leaf
        (e.g. `LSTMCarry(h=..., c=...)`: ‖∂L/∂h_t‖ and ‖∂L/∂C_t‖ separately).
      param_grads: ∂L/∂params, the gradient plain BPTT gives (the probes are zero).
    """

    loss: Float[Array, ""]
    norm: Float[Array, " time *batch"]
    leaf_norms: Any
    param_grads: Any


class InputSensitivity(NamedTuple):
    """‖∂carry_final/∂x_t‖_F for every t; see `input_sensitivity`.

    Attributes:
      norm: `[T, *batch]`, Frobenius norm of the Jacobian of the whole final carry.
      leaf_norms: the carry's structure with a `[T, *batch]` norm per leaf (for
        the LSTM, `leaf_norms.h` is ‖∂h_T/∂x_t‖_F and `leaf_norms.c` is ‖∂C_T/∂x_t‖_F).
    """

    norm: Float[Array, " time *batch"]
    leaf_norms: Any


def _norms(squares: jax.Array, like: Carry) -> tuple[jax.Array, Carry]:
    """Squared entries `[..., P]` -> (total norm `[...]`, per-leaf norms shaped like the carry)."""
    pieces = _trajectory.split(squares, _trajectory.leaf_sizes(like))
    per_leaf = [jnp.sqrt(jnp.sum(p, axis=-1)) for p in pieces]
    total = jnp.sqrt(jnp.sum(squares, axis=-1))
    return total, jax.tree.unflatten(jax.tree.structure(like), per_leaf)


def _check_loss(value: Any) -> None:
    shape = getattr(value, "shape", None)
    if shape != () or not jnp.issubdtype(value.dtype, jnp.floating):
        kind = f"shape {shape}, dtype {getattr(value, 'dtype', type(value).__name__)}"
        raise ValueError(f"loss_fn must return a floating scalar, got {kind}")


def state_grad_norms(
    cell: Cell,
    params: Params,
    xs: Float[Array, "time *batch in"],
    loss_fn: Callable[[jax.Array], jax.Array],
    carry: Carry | None = None,
    *,
    lengths: Int[Array, "*batch"] | None = None,
) -> StateGradNorms:
    """‖∂L/∂carry_t‖ for every step t, in one backward pass (zero probes).

        carry_t ← cell.step(carry_{t-1}, x_t) + p_t,   p_t = 0
        L = loss_fn(ys),   ∂L/∂carry_t = ∂L/∂p_t

    One `jax.value_and_grad` with respect to `(params, p)` gives every ∂L/∂p_t
    (and ∂L/∂params, unchanged: the probes are zero). The derivative is the
    total one, through later steps and through the output y_t: for cells whose
    output is a carry leaf (Elman, LSTM h, GRU, minGRU, minLSTM) and for cells
    with a `LinearRecurrence` readout (LRU). A custom cell whose output is
    another function of its state gets only the paths through later steps.

    Lengths: a padded step (t ≥ lengths[b]) holds the carry and emits zeros
    (`unroll`'s rule), so its probe is discarded and its norm is exactly 0;
    the held state is the same array as the last valid one, whose norm
    counts every use of it.

    Args:
      cell: the `Cell` (closed over, not traced).
      params: its parameters.
      xs: inputs `[T, *batch, in]`.
      loss_fn: `ys [T, *batch, H] -> scalar`.
      carry: initial state (default `cell.initial_carry`).
      lengths: optional valid lengths, int `[*batch]`.

    Returns:
      `StateGradNorms(loss, norm [T, *batch], leaf_norms, param_grads)`.
    """
    carry = _trajectory.initial_carry(cell, params, xs, carry)
    size = sum(_trajectory.leaf_sizes(carry))
    probes = jnp.zeros((*xs.shape[:-1], size), xs.dtype)
    wrapped = _trajectory.probed(cell)

    def loss(params, probes):
        xs_and_probes = jnp.concatenate([xs, probes], axis=-1)
        _, ys = unroll(wrapped, params, xs_and_probes, carry, lengths=lengths)
        value = loss_fn(ys)
        _check_loss(value)
        return value

    value, (param_grads, probe_grads) = jax.value_and_grad(loss, argnums=(0, 1))(params, probes)
    norm, leaf_norms = _norms(jnp.square(probe_grads), carry)
    return StateGradNorms(value, norm, leaf_norms, param_grads)


def input_sensitivity(
    cell: Cell,
    params: Params,
    xs: Float[Array, "time *batch in"],
    carry: Carry | None = None,
    *,
    lengths: Int[Array, "*batch"] | None = None,
) -> InputSensitivity:
    """‖∂carry_final/∂x_t‖_F for every t: how much the final state still feels x_t.

        S[t, b] = ‖∂carry_final[b] / ∂x_t[b]‖_F

    with carry_final the state after the last (valid) step, as `unroll` returns
    it. The lecture's "sensitivity of hidden states on a given input becomes
    weaker as we move away from it". One backward pass per carry unit (P of
    them, vmapped), each for the whole batch at once: examples do not interact
    in a `Cell`. With lengths, padded inputs have sensitivity 0.

    Args:
      cell: the `Cell`.
      params: its parameters.
      xs: inputs `[T, *batch, in]`.
      carry: initial state (default `cell.initial_carry`).
      lengths: optional valid lengths, int `[*batch]`.

    Returns:
      `InputSensitivity(norm [T, *batch], leaf_norms)`; for the LSTM,
      `leaf_norms.h` is ‖∂h_T/∂x_t‖_F.
    """
    carry = _trajectory.initial_carry(cell, params, xs, carry)
    final, pullback = jax.vjp(lambda xs: unroll(cell, params, xs, carry, lengths=lengths)[0], xs)
    size = sum(_trajectory.leaf_sizes(final))
    dtype = jax.tree.leaves(final)[0].dtype
    batch_shape = tuple(xs.shape[1:-1])
    eye = jnp.eye(size, dtype=dtype).reshape((size,) + (1,) * len(batch_shape) + (size,))
    basis = jnp.broadcast_to(eye, (size, *batch_shape, size))  # row k: unit k, every example

    def row(unit_vector):  # ∂carry_final[k]/∂xs, for every example at once
        (grad,) = pullback(_trajectory.unflatten(unit_vector, final))
        return jnp.sum(jnp.square(grad), axis=-1)  # [T, *batch]

    squares = jax.vmap(row)(basis)  # [P, T, *batch]
    norm, leaf_norms = _norms(jnp.moveaxis(squares, 0, -1), final)
    return InputSensitivity(norm, leaf_norms)
