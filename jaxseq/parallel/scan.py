"""Linear recurrences solved by one associative scan (all T steps in O(log T) depth).

    h_t = a_t ⊙ h_{t-1} + b_t        (elementwise: `linear_scan`)
    h_t = A_t h_{t-1} + b_t          (matrices:    `matrix_scan`)

with h_{-1} = 0 (fold a non-zero h_{-1} into b_0). The pairs (a_t, b_t) compose
associatively, (a₁, b₁) then (a₂, b₂) = (a₂a₁, a₂b₁ + b₂), so
`jax.lax.associative_scan` evaluates every prefix in parallel (Blelloch 1990).
With `reverse=True` the recurrence runs backwards in time,
h_t = a_t ⊙ h_{t+1} + b_t with h_T = 0, as an adjoint (backward) pass needs.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Inexact


def linear_scan(
    a: Inexact[Array, "time *batch state"],
    b: Inexact[Array, "time *batch state"],
    *,
    reverse: bool = False,
) -> Inexact[Array, "time *batch state"]:
    """Every h_t of h_t = a_t ⊙ h_{t-1} + b_t, h_{-1} = 0, along axis 0.

    Args:
      a: coefficients `[T, ...]`, real or complex.
      b: inputs, the shape and dtype of `a`.
      reverse: run the recurrence from t = T-1 down to 0 instead.

    Returns:
      `h: [T, ...]`.
    """

    def combine(first, second):
        a_1, b_1 = first
        a_2, b_2 = second
        return a_2 * a_1, a_2 * b_1 + b_2

    return jax.lax.associative_scan(combine, (a, b), reverse=reverse)[1]


def matrix_scan(
    a: Inexact[Array, "time *batch n n"],
    b: Inexact[Array, "time *batch n"],
    *,
    reverse: bool = False,
) -> Inexact[Array, "time *batch n"]:
    """Every h_t of h_t = A_t h_{t-1} + b_t, h_{-1} = 0, along axis 0 (matrix products at HIGHEST
    precision, so TF32 on a GPU does not limit a Newton solve built on it).

    Args:
      a: matrices `[T, *batch, n, n]`.
      b: vectors `[T, *batch, n]`.
      reverse: run the recurrence from t = T-1 down to 0 instead.

    Returns:
      `h: [T, *batch, n]`.
    """
    highest = jax.lax.Precision.HIGHEST

    def combine(first, second):
        a_1, b_1 = first
        a_2, b_2 = second
        a_21 = jnp.matmul(a_2, a_1, precision=highest)
        return a_21, jnp.matmul(a_2, b_1[..., None], precision=highest)[..., 0] + b_2

    return jax.lax.associative_scan(combine, (a, b), reverse=reverse)[1]
