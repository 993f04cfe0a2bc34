"""Strict JAX settings for the whole suite, and the fixed root key."""

import jax
import pytest

# Fail on implicit rank broadcasting and on silent dtype widening (equinox, rlax).
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_enable_x64", False)


@pytest.fixture
def key() -> jax.Array:
    """The root PRNG key; tests derive every other key from it."""
    return jax.random.key(0)
