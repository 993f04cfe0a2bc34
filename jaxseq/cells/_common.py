"""What every cell family shares: activations, the hoisted input projection, zero carries.

Mixed precision: every dense product of a cell goes through `dot`, which with a
`compute_dtype` (e.g. bfloat16) casts both operands to it and accumulates and
returns in float32 (the first operand's dtype); everything else (parameters,
carries, gate nonlinearities, the additive state updates) stays in the
parameter dtype.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxseq import _checks
from jaxseq.types import Cell, RecurrentMatmul

Activation = Callable[[jax.Array], jax.Array]

ACTIVATIONS: dict[str, Activation] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": jax.nn.hard_sigmoid,
    "hard_tanh": jax.nn.hard_tanh,
    "softsign": jax.nn.soft_sign,
    "identity": lambda x: x,
}


def activation(name: str, value: str | Activation) -> Activation:
    """Looks up an activation by name (see `ACTIVATIONS`) or passes a callable through.

    Args:
      name: the keyword argument's name, for the error message.
      value: a key of `ACTIVATIONS` or a callable `array -> array`.
    """
    if callable(value):
        return value
    _checks.check_option(name, value, ACTIVATIONS)
    return ACTIVATIONS[value]


def project(params: Any, x: jax.Array, compute_dtype: Any = None) -> jax.Array:
    """The input-only part of a step for every cell here: `x @ w_x + b` on the last axis.

    `x` of any floating dtype is first cast to the parameter dtype (a no-op when
    they match); with a `compute_dtype` the product runs in it (see `dot`).
    """
    xp = dot(x.astype(params.w_x.dtype), params.w_x, compute_dtype)
    return xp + broadcast(params.b, xp)


def projection(compute_dtype: Any) -> Callable:
    """`project` with its product in `compute_dtype` (plain `project` for None)."""
    if compute_dtype is None:
        return project
    return functools.partial(project, compute_dtype=compute_dtype)


def named(name: str, compute_dtype: Any) -> str:
    """`name` with `compute_dtype=...` appended inside its parentheses, when not None."""
    if compute_dtype is None:
        return name
    return f"{name[:-1]}, compute_dtype={compute_dtype.name})"


def broadcast(v: jax.Array, like: jax.Array) -> jax.Array:
    """`v: [H]` reshaped to broadcast explicitly against `like: [..., H]` (no rank promotion)."""
    return v.reshape((1,) * (like.ndim - v.ndim) + v.shape)


def input_size(params: Any) -> int:
    return params.w_x.shape[0]


def zero_state(params: Any, batch_shape: tuple[int, ...]) -> jax.Array:
    """`[*batch_shape, hidden]` zeros in the dtype of the recurrent weight."""
    return jnp.zeros((*batch_shape, params.w_h.shape[0]), params.w_h.dtype)


def make_cell(
    name: str,
    hidden_size: int,
    init: Callable,
    recur: Callable | RecurrentMatmul,
    initial_carry: Callable = zero_state,
    compute_dtype: Any = None,
) -> Cell:
    """Builds a `Cell` whose input projection is `x @ w_x + b`.

    `recur` is either the recurrent part of a step or a `RecurrentMatmul`, from
    which the step is derived (and which `unroll` then also uses for its
    sequence-level VJP). `compute_dtype` (checked here; None takes the
    `RecurrentMatmul`'s own) is the dtype of the projection's product and of the
    `RecurrentMatmul`'s; a plain `recur` must apply it to its own products.
    """
    _checks.check_positive_int("hidden_size", hidden_size)
    if compute_dtype is None and isinstance(recur, RecurrentMatmul):
        compute_dtype = recur.compute_dtype
    compute_dtype = _checks.check_compute_dtype(compute_dtype)
    recurrent = None
    if isinstance(recur, RecurrentMatmul):
        recurrent = recur._replace(compute_dtype=compute_dtype)
        recur = recur_from(recurrent)
    return Cell(
        name=named(name, compute_dtype),
        hidden_size=hidden_size,
        init=init,
        initial_carry=initial_carry,
        project=projection(compute_dtype),
        recur=recur,
        input_size=input_size,
        recurrent=recurrent,
    )


def recur_from(spec: RecurrentMatmul) -> Callable:
    """The step `recur(params, carry, xp_t)` a `RecurrentMatmul` describes."""

    def recur(params, carry, xp_t):
        hp_t = dot(spec.state(carry), spec.weight(params), spec.compute_dtype)
        return spec.combine(params, carry, xp_t, hp_t)

    return recur


def dot(a: jax.Array, w: jax.Array, compute_dtype=None) -> jax.Array:
    """`a @ w`; with a `compute_dtype`, in that dtype, accumulated and returned in `a`'s dtype.

    With `compute_dtype=jnp.bfloat16` and float32 operands, both are rounded to
    bfloat16 (8 significant bits) and the products are summed in float32
    (`preferred_element_type`), as TPU and GPU matrix units do.
    """
    if compute_dtype is None:
        return a @ w
    return jnp.matmul(
        a.astype(compute_dtype), w.astype(compute_dtype), preferred_element_type=a.dtype
    )


def weight_h(params: Any) -> jax.Array:
    """The recurrent weight `w_h` of the cells here."""
    return params.w_h


def split(z: jax.Array, num: int) -> list[jax.Array]:
    """Splits fused gate pre-activations `[..., num*H]` into `num` arrays `[..., H]`."""
    return jnp.split(z, num, axis=-1)
