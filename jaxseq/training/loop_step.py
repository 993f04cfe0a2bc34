"""The function `fit` calls once per step: batch and key derived from `state.step`.

    data_base, step_base = split(key)                      # once per run (`base_keys`)
    s = state.step
    state, metrics = train_step(state, sample_batch(fold_in(data_base, s), s[, data]),
                                fold_in(step_base, s))     # jitted, state donated

`data` (optional, e.g. a training set) is an argument of the jitted step, not a
constant baked into the compiled program.

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

SampleFn = Callable[..., Any]


def make_loop_step(
    train_step: Callable, sample_batch: SampleFn, num_seeds: int | None, batch_sharding: Any = None
):
    """`(state, (data_base, step_base, data)) -> train_step(state, batch(step), key(step))`.

    Cached (a few entries) so repeated `fit` calls with the same functions compile
    once; the cache keeps those functions (and what they close over) alive.

    Args:
      train_step: from `make_train_step(..., num_seeds=num_seeds)`.
      sample_batch: `(key, step) -> batch`, or `(key, step, data) -> batch` when
        the run passes `data` (not None); jittable.
      num_seeds: K to vmap the sampling over `[K]` keys and steps, or None.
      batch_sharding: None, or a `jax.sharding.Sharding` (or a pytree prefix of
        the batch with them) that the sampled batch is constrained to with
        `jax.lax.with_sharding_constraint` (see `jaxseq.sharding.batch_sharding`).

    Returns:
      The jitted step, donating its state argument.
    """
    leaves, treedef = jax.tree.flatten(batch_sharding)  # hashable for the cache
    return _make_loop_step(train_step, sample_batch, num_seeds, treedef, tuple(leaves))


@functools.lru_cache(maxsize=8)
def _make_loop_step(train_step, sample_batch, num_seeds, treedef, leaves):
    batch_sharding = jax.tree.unflatten(treedef, leaves)

    def keys_and_batch(data_base, step_base, step, data):
        key = jax.random.fold_in(data_base, step)
        batch = sample_batch(key, step) if data is None else sample_batch(key, step, data)
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return batch, jax.random.fold_in(step_base, step)

    sample = keys_and_batch if num_seeds is None else jax.vmap(keys_and_batch, (0, 0, 0, None))

    def step_fn(state: TrainState, bases: tuple[jax.Array, jax.Array, Any]):
        batch, key = sample(bases[0], bases[1], state.step, bases[2])
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
