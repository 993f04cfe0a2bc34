"""What every cell family shares: activations, the hoisted input projection, zero carries."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxseq import _checks
from jaxseq.types import Cell

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


def project(params: Any, x: jax.Array) -> jax.Array:
    """The input-only part of a step for every cell here: `x @ w_x + b` on the last axis."""
    xp = x @ params.w_x
    return xp + broadcast(params.b, xp)


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
    recur: Callable,
    initial_carry: Callable = zero_state,
) -> Cell:
    """Builds a `Cell` whose input projection is `x @ w_x + b`."""
    _checks.check_positive_int("hidden_size", hidden_size)
    return Cell(
        name=name,
        hidden_size=hidden_size,
        init=init,
        initial_carry=initial_carry,
        project=project,
        recur=recur,
        input_size=input_size,
    )


def split(z: jax.Array, num: int) -> list[jax.Array]:
    """Splits fused gate pre-activations `[..., num*H]` into `num` arrays `[..., H]`."""
    return jnp.split(z, num, axis=-1)
