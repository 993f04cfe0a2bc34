"""`unroll(..., method="associative")`: a linear-recurrence cell in one parallel scan."""

import jax
import jax.numpy as jnp

from jaxseq import _masking as masking
from jaxseq.parallel.scan import linear_scan
from jaxseq.types import Carry, Cell, Params


def check_linear(cell: Cell) -> None:
    """Raises `ValueError` unless the cell describes its step as a `LinearRecurrence`."""
    if cell.linear is None:
        raise ValueError(
            f"method='associative' needs a cell whose step is an elementwise linear "
            f"recurrence (cell.linear, as in mingru, minlstm and lru); {cell.name} has "
            f"cell.linear=None: use method='scan' or method='deer'"
        )


def evaluate(
    cell: Cell, params: Params, xps, carry: Carry, valid: jax.Array | None
) -> tuple[Carry, jax.Array]:
    """All steps of a linear-recurrence cell at once, reading forwards.

        s_t = a_t ⊙ s_{t-1} + b_t,   s_{-1} = to_state(carry)
        padded steps (valid_t false): a_t = 1, b_t = 0, so the state is unchanged

    Args:
      cell: a `Cell` with `cell.linear`.
      params: its parameters.
      xps: the hoisted projection of every step, leaves `[T, *batch, ...]`.
      carry: the initial carry, leaves `[*batch, ...]`.
      valid: bool `[T, *batch]` (steps inside each sequence's length) or None.

    Returns:
      `(final_carry, ys)` with `ys: [T, *batch, H]`, zeros at padded steps.
    """
    check_linear(cell)
    linear = cell.linear
    a, b = linear.coefficients(params, xps)
    s_0 = linear.to_state(params, carry)
    if valid is not None:
        mask = masking.expand(valid, a.ndim)
        a = jnp.where(mask, a, jnp.ones_like(a))
        b = jnp.where(mask, b, jnp.zeros_like(b))
    b = b.at[0].add(a[0] * s_0)
    states = linear_scan(a, b)
    _, ys = linear.readout(params, states, xps)
    final, _ = linear.readout(params, states[-1], jax.tree.map(lambda x: x[-1], xps))
    if valid is not None:
        ys = masking.zero(valid, ys)
    return final, ys
