"""minGRU and minLSTM (Feng et al. 2024): gates that read the input only.

Without `h_{t-1}` in the gates, each step is elementwise linear in the state,

    h_t = a_t ⊙ h_{t-1} + b_t,    a_t, b_t functions of x_t alone,

so `unroll(..., method="associative")` evaluates all T steps with one parallel
scan, while the default sequential scan runs `recur` as for any other cell.
These are the paper's plain (not log-space) forms: the candidate h̃_t is a
linear map of x_t with no positivity constraint. In float32 they match the
sequential scan to ~1e-6 over thousands of steps; the log-space variant, which
guards against underflow of long products of gates, is not implemented.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxseq import _checks, initializers
from jaxseq.cells import _common
from jaxseq.types import Cell, Initializer, LinearRecurrence, PRNGKey


class MinGRUParams(NamedTuple):
    """minGRU parameters, gates fused in the order (z, h̃): `w_x [in, 2H]`, `b [2H]`."""

    w_x: Float[Array, "in gates_hidden"]
    b: Float[Array, " gates_hidden"]


class MinLSTMParams(NamedTuple):
    """minLSTM parameters, gates fused in the order (f, i, h̃): `w_x [in, 3H]`, `b [3H]`."""

    w_x: Float[Array, "in gates_hidden"]
    b: Float[Array, " gates_hidden"]


def _make(
    name: str,
    hidden_size: int,
    num_gates: int,
    coefficients: Callable,
    w_x_init: Initializer,
    b_init: Initializer,
    dtype,
    params_type: type,
    compute_dtype,
) -> Cell:
    """A `Cell` for `h_t = a_t ⊙ h_{t-1} + b_t` with `(a, b) = coefficients(xp)`."""
    _checks.check_positive_int("hidden_size", hidden_size)
    compute_dtype = _checks.check_compute_dtype(compute_dtype)

    def init(key: PRNGKey, input_size: int):
        _checks.check_positive_int("input_size", input_size)
        k_x, k_b = jax.random.split(key)
        return params_type(
            w_x=initializers.fused(k_x, [w_x_init] * num_gates, input_size, hidden_size, dtype),
            b=initializers.fused(k_b, [b_init] * num_gates, None, hidden_size, dtype),
        )

    def initial_carry(params, batch_shape: tuple[int, ...]) -> jax.Array:
        return jnp.zeros((*batch_shape, hidden_size), params.w_x.dtype)

    def recur(params, h_tm1: jax.Array, xp_t: jax.Array):
        a_t, b_t = coefficients(params, xp_t)
        h_t = a_t * h_tm1 + b_t
        return h_t, h_t

    linear = LinearRecurrence(
        coefficients=coefficients,
        to_state=lambda params, h: h,
        readout=lambda params, h, xp: (h, h),
    )
    return Cell(
        name=_common.named(name, compute_dtype),
        hidden_size=hidden_size,
        init=init,
        initial_carry=initial_carry,
        project=_common.projection(compute_dtype),
        recur=recur,
        input_size=_common.input_size,
        linear=linear,
    )


def mingru(
    hidden_size: int,
    *,
    w_x_init: Initializer = initializers.glorot_uniform(),
    b_init: Initializer = initializers.zeros,
    dtype=jnp.float32,
    compute_dtype=None,
) -> Cell:
    """minGRU: a GRU whose gates see only the input.

        z_t = σ(x_t W^z + b^z)                      update gate
        h̃_t = x_t W^h + b^h                         candidate (linear)
        h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t,    y_t = h_t

    Gate order in the fused weights: (z, h̃). The carry is `h: [*batch, H]`.
    As a linear recurrence: a_t = 1 − z_t, b_t = z_t ⊙ h̃_t.

    Args:
      hidden_size: width H of the state.
      w_x_init: initialiser of each W block `[in, H]` (default Glorot uniform).
      b_init: initialiser of each bias block `[H]` (default zeros).
      dtype: parameter dtype.
      compute_dtype: dtype of the input projection's product (None: the
        parameter dtype); with `jnp.bfloat16` it takes bfloat16 operands and
        accumulates in float32, while params, gates and the state stay float32.

    Returns:
      A `Cell` with params `MinGRUParams(w_x, b)` and a `LinearRecurrence`.

    References:
      Feng, Tung, Ahmed, Bengio, Hajimirsadeghi 2024, "Were RNNs all we needed?".
    """

    def coefficients(params: MinGRUParams, xp: jax.Array):
        pre_z, candidate = _common.split(xp, 2)
        z = jax.nn.sigmoid(pre_z)
        return 1.0 - z, z * candidate

    name = f"mingru(hidden_size={hidden_size})"
    return _make(
        name, hidden_size, 2, coefficients, w_x_init, b_init, dtype, MinGRUParams, compute_dtype
    )


def minlstm(
    hidden_size: int,
    *,
    w_x_init: Initializer = initializers.glorot_uniform(),
    b_init: Initializer = initializers.zeros,
    dtype=jnp.float32,
    compute_dtype=None,
) -> Cell:
    """minLSTM: normalised forget and input gates that see only the input.

        f_t = σ(x_t W^f + b^f),   i_t = σ(x_t W^i + b^i)
        f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)     time-independent scale
        h̃_t = x_t W^h + b^h                                     candidate (linear)
        h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t,    y_t = h_t

    Gate order in the fused weights: (f, i, h̃). The carry is `h: [*batch, H]`
    (minLSTM has no separate cell state). As a linear recurrence:
    a_t = f'_t, b_t = i'_t ⊙ h̃_t.

    Args:
      hidden_size: width H of the state.
      w_x_init: initialiser of each W block `[in, H]` (default Glorot uniform).
      b_init: initialiser of each bias block `[H]` (default zeros).
      dtype: parameter dtype.
      compute_dtype: dtype of the input projection's product (None: the
        parameter dtype); with `jnp.bfloat16` it takes bfloat16 operands and
        accumulates in float32, while params, gates and the state stay float32.

    Returns:
      A `Cell` with params `MinLSTMParams(w_x, b)` and a `LinearRecurrence`.

    References:
      Feng, Tung, Ahmed, Bengio, Hajimirsadeghi 2024, "Were RNNs all we needed?".
    """

    def coefficients(params: MinLSTMParams, xp: jax.Array):
        pre_f, pre_i, candidate = _common.split(xp, 3)
        f, i = jax.nn.sigmoid(pre_f), jax.nn.sigmoid(pre_i)
        total = f + i
        return f / total, (i / total) * candidate

    name = f"minlstm(hidden_size={hidden_size})"
    return _make(
        name, hidden_size, 3, coefficients, w_x_init, b_init, dtype, MinLSTMParams, compute_dtype
    )
