"""Padded steps, for every evaluator behind `unroll`: a step past its sequence's
length keeps the carry and emits zeros.

`valid` is `[*batch]` for one step or `[T, *batch]` for a whole sequence; it
broadcasts against the trailing feature axes of each array it masks.
"""

import jax
import jax.numpy as jnp


def expand(valid: jax.Array, ndim: int) -> jax.Array:
    """`valid` with singleton axes appended, to broadcast against a rank-`ndim` array."""
    return valid.reshape(valid.shape + (1,) * (ndim - valid.ndim))


def keep(valid: jax.Array, new, old):
    """`new` where `valid`, else `old`, leaf by leaf (a carry through a padded step)."""
    return jax.tree.map(lambda n, o: jnp.where(expand(valid, n.ndim), n, o), new, old)


def zero(valid: jax.Array, ys: jax.Array) -> jax.Array:
    """`ys` where `valid`, else zeros (the output of a padded step)."""
    return jnp.where(expand(valid, ys.ndim), ys, jnp.zeros_like(ys))
