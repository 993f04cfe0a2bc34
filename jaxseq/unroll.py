"""THE scan: runs any `Cell` over the time axis.

No other module calls `lax.scan` on a cell. The input-only part of every step
(`cell.project`) is computed for all steps in one matrix product before the
scan; the scan body only does the recurrent part (`cell.recur`).
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxseq import _checks
from jaxseq.types import Carry, Cell, Params


def _expand(mask: jax.Array, ndim: int) -> jax.Array:
    """Appends singleton axes so that `mask: [*batch]` broadcasts against a rank-`ndim` leaf."""
    return mask.reshape(mask.shape + (1,) * (ndim - mask.ndim))


def _where(mask: jax.Array, new, old):
    return jax.tree.map(lambda n, o: jnp.where(_expand(mask, n.ndim), n, o), new, old)


def _reverse_within_lengths(
    xs: jax.Array, lengths: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Reverses each sequence within its own length; padding stays in place.

    Returns the permuted `xs` and the index `[T, *batch]` that did it; the
    permutation is its own inverse, so the same index maps outputs back.
    """
    t = jnp.arange(xs.shape[0], dtype=lengths.dtype).reshape((-1,) + (1,) * lengths.ndim)
    t = jnp.broadcast_to(t, valid.shape)
    index = jnp.where(valid, lengths[None] - 1 - t, t)
    return jnp.take_along_axis(xs, index[..., None], axis=0), index


def unroll(
    cell: Cell,
    params: Params,
    xs: Float[Array, "time *batch in"],
    carry: Carry | None = None,
    *,
    lengths: Int[Array, "*batch"] | None = None,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool = False,
    truncate: int | None = None,
) -> tuple[Carry, Float[Array, "time *batch hidden"]]:
    """Runs `cell` over the leading (time) axis of `xs` with `jax.lax.scan`.

    Equivalent to (without `lengths`, `reverse` or `truncate`):

        for t in range(T):
            carry, ys[t] = cell.step(params, carry, xs[t])

    with `cell.project(params, xs)` hoisted out of the loop as one matmul.

    Lengths: a step at t ≥ `lengths[b]` leaves sequence b's carry unchanged and
    emits zeros, so the final carry is the state after each sequence's last valid
    step (as in Flax's `RNN` and PyTorch's packed sequences). With
    `reverse=True` and `lengths`, each sequence is read from its own last valid
    step back to step 0, and `ys[t]` is the output after reading steps
    `lengths[b]-1, ..., t` (PyTorch's backward direction on packed sequences).

    Truncated BPTT: with `truncate=k` the gradient through the carry is stopped
    before every k-th step (in reading order), so ∂L/∂θ only flows back at most
    k steps through the state; the forward pass is unchanged, and k ≥ T equals
    full BPTT.

    Args:
      cell: the `Cell` (closed over, not traced).
      params: the cell's parameters.
      xs: inputs `[T, *batch, in]`, time-major.
      carry: initial state (leaves `[*batch, H]`); zeros from
        `cell.initial_carry` when None.
      lengths: optional valid lengths, int `[*batch]` with values in [0, T].
      reverse: read the sequences backwards (outputs stay time-aligned).
      unroll: `lax.scan`'s unroll factor (steps per loop iteration).
      remat: rematerialise each step in the backward pass (`jax.checkpoint`):
        memory O(T·carry) instead of O(T·activations), for one more forward.
      truncate: stop the gradient through the carry every `truncate` steps.

    Returns:
      `(final_carry, ys)` with `ys: [T, *batch, H]`.
    """
    _checks.check_inputs(cell, params, xs, name="xs", time_axis=True)
    _checks.check_positive_int("unroll", unroll)
    if truncate is not None:
        _checks.check_positive_int("truncate", truncate)
    num_steps, batch_shape = xs.shape[0], tuple(xs.shape[1:-1])
    if carry is None:
        carry = cell.initial_carry(params, batch_shape)
    else:
        _checks.check_carry(cell, params, carry, batch_shape)

    valid = index = None
    if lengths is not None:
        _checks.check_lengths(lengths, num_steps, batch_shape)
        lengths = jnp.asarray(lengths, jnp.int32)  # any integer dtype, under x64 too
        t = jnp.arange(num_steps, dtype=jnp.int32).reshape((-1,) + (1,) * len(batch_shape))
        valid = t < lengths[None]
        if reverse:
            xs, index = _reverse_within_lengths(xs, lengths, valid)
    scan_reverse = reverse and lengths is None
    order = None  # position in reading order, scanned only when truncating
    if truncate is not None:
        order = jnp.arange(num_steps)
        order = order[::-1] if scan_reverse else order

    def body(carry, inputs):
        s, xp_t, valid_t = inputs
        if truncate is not None:
            cut = (s > 0) & (s % truncate == 0)
            if valid_t is not None:
                cut = cut & valid_t  # a padded step passes the carry on untouched
            carry = _where(cut, jax.lax.stop_gradient(carry), carry)
        new_carry, y_t = cell.recur(params, carry, xp_t)
        if valid_t is not None:
            new_carry = _where(valid_t, new_carry, carry)
            y_t = jnp.where(_expand(valid_t, y_t.ndim), y_t, jnp.zeros_like(y_t))
        return new_carry, y_t

    if remat:
        body = jax.checkpoint(body, prevent_cse=False)
    xps = cell.project(params, xs)
    carry, ys = jax.lax.scan(body, carry, (order, xps, valid), reverse=scan_reverse, unroll=unroll)
    if index is not None:
        ys = jnp.take_along_axis(ys, index[..., None], axis=0)
    return carry, ys
