"""The function `fit` calls once per step: batch and key derived from `state.step`.

    data_base, step_base = split(key)                      # once per run (`base_keys`)
    s = state.step
    state, metrics = train_step(state, sample_batch(fold_in(data_base, s), s),
                                fold_in(step_base, s))     # jitted, state donated

Because everything is a function of `state.step`, a resumed run sees the data and
keys of an uninterrupted one, and a step that the NaN guard rejected (leaving
`state.step` unchanged) is replayed, so the state stays frozen until the next sync.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxseq.training.state import TrainState

SampleFn = Callable[[jax.Array, jax.Array], Any]


@functools.lru_cache(maxsize=8)
def make_loop_step(train_step: Callable, sample_batch: SampleFn, num_seeds: int | None):
    """`(state, (data_base, step_base)) -> train_step(state, batch(step), key(step))`, jitted.

    Cached (a few entries) so repeated `fit` calls with the same functions compile
    once; the cache keeps those functions (and what they close over) alive.

    Args:
      train_step: from `make_train_step(..., num_seeds=num_seeds)`.
      sample_batch: `(key, step) -> batch`, jittable.
      num_seeds: K to vmap the sampling over `[K]` keys and steps, or None.

    Returns:
      The jitted step, donating its state argument.
    """

    def keys_and_batch(data_base, step_base, step):
        batch = sample_batch(jax.random.fold_in(data_base, step), step)
        return batch, jax.random.fold_in(step_base, step)

    sample = keys_and_batch if num_seeds is None else jax.vmap(keys_and_batch)

    def step_fn(state: TrainState, bases: tuple[jax.Array, jax.Array]):
        batch, key = sample(bases[0], bases[1], state.step)
        return train_step(state, batch, key)

    return jax.jit(step_fn, donate_argnums=0)


def base_keys(key: Any, num_seeds: int | None) -> tuple[jax.Array, jax.Array]:
    """Splits the run key (or `[K]` keys) into the data and step base keys.

    Args:
      key: a typed PRNG key or raw uint32 key data; `[K]` keys with K seeds.
      num_seeds: K or None.

    Returns:
      `(data_base, step_base)`, each shaped like `key`.
    """
    if not hasattr(key, "dtype"):
        raise TypeError(f"key must be a jax PRNG key, got {type(key).__name__}")
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    want = () if num_seeds is None else (num_seeds,)
    if key.shape != want:
        raise ValueError(
            f"key must have shape {want} (one key per seed) for num_seeds={num_seeds}, "
            f"got {key.shape}"
        )
    return _split_keys(key)


@jax.jit
def _split_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(data_base, step_base)` from a key or from `[K]` keys, one compile per shape."""
    split = jnp.vectorize(jax.random.split, signature="()->(2)")(key)
    return split[..., 0], split[..., 1]
