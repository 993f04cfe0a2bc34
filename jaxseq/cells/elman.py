"""The Elman (simple) RNN: h_t = f(W x_t + U h_{t-1} + b)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxseq import _checks, initializers
from jaxseq.cells import _common
from jaxseq.types import Cell, Initializer, PRNGKey, RecurrentMatmul


class ElmanParams(NamedTuple):
    """Parameters of an Elman cell (weights right-multiply)."""

    w_x: Float[Array, "in hidden"]
    w_h: Float[Array, "hidden hidden"]
    b: Float[Array, " hidden"]


def elman(
    hidden_size: int,
    *,
    activation: str | _common.Activation = "tanh",
    w_x_init: Initializer = initializers.glorot_uniform(),
    w_h_init: Initializer = initializers.orthogonal(),
    b_init: Initializer = initializers.zeros,
    dtype=jnp.float32,
    compute_dtype=None,
) -> Cell:
    """The Elman / vanilla RNN cell.

        h_t = f(x_t W + h_{t-1} U + b),    y_t = h_t

    The carry is the array `h: [*batch, hidden]`.

    Args:
      hidden_size: width H of the state.
      activation: f; `"tanh"` (default), `"relu"` (with `w_h_init=identity()` this
        is the IRNN of Le et al. 2015), any key of `ACTIVATIONS`, or a callable.
      w_x_init: initialiser of W `[in, H]` (default Glorot uniform).
      w_h_init: initialiser of U `[H, H]` (default orthogonal).
      b_init: initialiser of b `[H]` (default zeros).
      dtype: parameter dtype.
      compute_dtype: dtype of the matrix products (None: the parameter dtype).
        With `jnp.bfloat16` and float32 params, the input projection and the
        recurrent product take bfloat16 operands and accumulate in float32;
        params, the carry, the nonlinearities and the state update stay float32
        (see "Mixed precision" in README).

    Returns:
      A `Cell` with params `ElmanParams(w_x, w_h, b)`.

    References:
      Elman 1990, "Finding structure in time".
    """
    f = _common.activation("activation", activation)

    def init(key: PRNGKey, input_size: int) -> ElmanParams:
        _checks.check_positive_int("input_size", input_size)
        k_x, k_h, k_b = jax.random.split(key, 3)
        return ElmanParams(
            w_x=w_x_init(k_x, (input_size, hidden_size), dtype),
            w_h=w_h_init(k_h, (hidden_size, hidden_size), dtype),
            b=b_init(k_b, (hidden_size,), dtype),
        )

    def combine(params: ElmanParams, h_tm1: jax.Array, xp_t: jax.Array, hp_t: jax.Array):
        h_t = f(xp_t + hp_t)  # hp_t = h_{t-1} @ w_h
        return h_t, h_t

    recurrent = RecurrentMatmul(
        weight=_common.weight_h,
        state=lambda h: h,
        combine=combine,
        additive=True,
        kernel="elman" if activation == "tanh" else None,
    )
    name = f"elman(hidden_size={hidden_size}, activation={activation!r})"
    return _common.make_cell(name, hidden_size, init, recurrent, compute_dtype=compute_dtype)
