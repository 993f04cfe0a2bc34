"""Vanishing/exploding-gradient studies: the gradient profile by lag, its decay rate, tracking.

    profile = gradient_profile(cell, params, xs, loss_fn)   # [T]: log10 ‖∂L/∂carry‖ by lag
    rate = decay_rate(profile)                               # decades per step (< 0: vanishing)
    trace = track_training(train_step, state, sample_batch, key=key, steps=1000,
                           probe=lambda params: ..., probe_every=50)   # probes during training

Lag k counts the steps between a state and the end of the sequence: lag k is
the state after reading `xs[T-1-k]`, so lag 0 is the last state. For a linear
RNN h_t = h_{t-1} U + x_t W whose U is r times an orthogonal matrix, ∂L/∂h at
lag k is r^k times its value at lag 0, so the profile is a straight line of
slope log10 r (Pascanu, Mikolov, Bengio 2013). `gradient_profile` and
`decay_rate` jit and vmap (over seeds: `jax.vmap(partial(gradient_profile, cell))`).
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from jaxseq.diagnostics.probes import state_grad_norms
from jaxseq.training.state import TrainState
from jaxseq.types import Carry, Cell, Params

# log10 of the smallest norm a fit uses: float32 flushes values below ~1e-38 to 0,
# so norms this small carry no information about the slope.
FLOOR = -35.0


def gradient_profile(
    cell: Cell,
    params: Params,
    xs: Float[Array, "time *batch in"],
    loss_fn: Callable[[jax.Array], jax.Array],
    carry: Carry | None = None,
) -> Float[Array, " lag"]:
    """log10 of the batch-mean ‖∂L/∂carry‖ at every lag k = 0 … T−1 (one backward pass).

        profile[k] = log10( mean_b ‖∂L/∂carry_{T−1−k}[b]‖ )

    The norm covers every carry leaf (h and C for an LSTM); see
    `state_grad_norms`. A norm that underflows to 0 gives −inf (`decay_rate`
    skips it).

    Args:
      cell: the `Cell`.
      params: its parameters.
      xs: inputs `[T, *batch, in]`, every sequence of full length.
      loss_fn: `ys [T, *batch, H] -> scalar`.
      carry: initial state (default `cell.initial_carry`).

    Returns:
      `[T]`, indexed by lag (reversed time).
    """
    norms = state_grad_norms(cell, params, xs, loss_fn, carry).norm  # [T, *batch]
    mean = jnp.mean(norms.reshape(norms.shape[0], -1), axis=1)
    return jnp.log10(mean)[::-1]


def decay_rate(profile: Float[Array, " lag"], *, floor: float = FLOOR) -> Float[Array, ""]:
    """Least-squares slope of a log10 profile against the lag: decades per step.

        slope = Σ_k w_k (k − k̄)(p_k − p̄) / Σ_k w_k (k − k̄)²,   w_k = [p_k finite and > floor]

    with k̄, p̄ the w-weighted means. Negative: gradients vanish with the lag
    (−0.3 means a factor 2 per step); positive: they explode.

    Args:
      profile: `[L]` log10 norms by lag, e.g. from `gradient_profile`.
      floor: entries at or below it (underflowed norms) are left out of the fit.

    Returns:
      The slope, a scalar; NaN when fewer than two entries are usable.
    """
    if jnp.ndim(profile) != 1:
        raise ValueError(f"profile must be 1-D [lag], got shape {jnp.shape(profile)}")
    profile = jnp.asarray(profile)
    lags = jnp.arange(profile.shape[0], dtype=profile.dtype)
    usable = jnp.isfinite(profile) & (profile > floor)
    w = usable.astype(profile.dtype)
    y = jnp.where(usable, profile, 0.0)
    count = jnp.sum(w)
    lag_mean = jnp.sum(w * lags) / jnp.maximum(count, 1.0)
    y_mean = jnp.sum(w * y) / jnp.maximum(count, 1.0)
    spread = jnp.sum(w * jnp.square(lags - lag_mean))
    slope = jnp.sum(w * (lags - lag_mean) * (y - y_mean)) / jnp.where(spread > 0, spread, 1.0)
    return jnp.where(count >= 2, slope, jnp.nan)


class TrainingTrace(NamedTuple):
    """What `track_training` records.

    Attributes:
      state: the final `TrainState`.
      metrics: `{name: [steps, *seeds]}`, every step's train-step metrics (loss,
        grad_norm before clipping, ...); NaN/Inf where the guard rejected the update.
      probe_steps: `[C]` the steps (updates done) at which `probe` ran.
      probes: the `probe` outputs stacked along a leading `[C]` axis (host arrays).
    """

    state: TrainState
    metrics: dict[str, np.ndarray]
    probe_steps: np.ndarray
    probes: Any


def track_training(
    train_step: Callable,
    state: TrainState,
    sample_batch: Callable[[jax.Array, jax.Array], Any],
    *,
    key: jax.Array,
    steps: int,
    probe: Callable[[Any], Any] | None = None,
    probe_every: int = 50,
    num_seeds: int | None = None,
    desc: str = "train",
) -> TrainingTrace:
    """Trains like `training.fit` while recording every step's metrics and probing the params.

        for s in range(steps):
            if s % probe_every == 0: probes.append(probe(state.params))
            state, metrics[s] = train_step(state, sample_batch(fold_in(data_key, s), s), ...)
        probes.append(probe(state.params))                   # after the last step too

    The batches and step keys are derived from `key` and the step exactly as `fit`
    derives them, so a tracked run trains as the same `fit` run. Unlike `fit` it neither logs nor
    checkpoints nor stops on a non-finite update: the train step's guard freezes
    that seed (it replays its step) and the metrics show NaN/Inf, which is what an
    exploding-gradient study wants to see. The host waits only at probes and at
    the end; the progress bar (a terminal only) moves at each probe.

    Args:
      train_step: from `training.make_train_step(..., num_seeds=num_seeds)`.
      state: the initial `TrainState` (donated).
      sample_batch: `(key, step) -> batch`, jittable.
      key: the run's typed PRNG key (`[K]` keys with K seeds), split as `fit` splits it.
      steps: number of updates (> 0).
      probe: `params -> pytree of arrays`, e.g. a jitted `gradient_profile` on a
        fixed batch; None records metrics only.
      probe_every: steps between probes (> 0); also the progress-bar granularity.
      num_seeds: K when the state holds K stacked models, else None.
      desc: label of the progress bar.

    Returns:
      A `TrainingTrace`.
    """
    for name, value in (("steps", steps), ("probe_every", probe_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        raise TypeError(f"key must be a typed PRNG key (jax.random.key), got {key!r}")
    step_fn = _loop_step(train_step, sample_batch, num_seeds)
    bases = _split_keys(key)
    metrics, probe_steps, probes = [], [], []
    console = Console()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    shown = console.is_terminal or console.is_jupyter
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True,
                  disable=not shown) as bar:  # fmt: skip
        task = bar.add_task(desc, total=steps)
        for s in range(steps + 1):
            if probe is not None and (s % probe_every == 0 or s == steps):
                probe_steps.append(s)  # a sync, so the donated state is no longer read
                probes.append(jax.device_get(probe(state.params)))
            if s % probe_every == 0:
                bar.update(task, completed=s)
            if s < steps:
                state, record = step_fn(state, *bases)
                metrics.append(record)
    metrics = jax.device_get(metrics)
    stacked = {name: np.stack([m[name] for m in metrics]) for name in metrics[0]}
    probed = jax.tree.map(lambda *p: np.stack(p), *probes) if probes else None
    return TrainingTrace(state, stacked, np.asarray(probe_steps), probed)


@functools.lru_cache(maxsize=8)
def _loop_step(train_step: Callable, sample_batch: Callable, num_seeds: int | None) -> Callable:
    """`(state, data_base, step_base) -> train_step(state, batch(s), key(s))`, s = state.step.

    The derivation `training.fit` uses: batch `sample_batch(fold_in(data_base, s), s)`,
    step key `fold_in(step_base, s)`; vmapped over seeds with `num_seeds`.
    """

    def keys_and_batch(data_base, step_base, step):
        batch = sample_batch(jax.random.fold_in(data_base, step), step)
        return batch, jax.random.fold_in(step_base, step)

    sample = keys_and_batch if num_seeds is None else jax.vmap(keys_and_batch)

    def step_fn(state: TrainState, data_base: jax.Array, step_base: jax.Array):
        return train_step(state, *sample(data_base, step_base, state.step))

    return jax.jit(step_fn, donate_argnums=0)


@jax.jit
def _split_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(data_base, step_base)` from a key or `[K]` keys, as `training.fit` splits them."""
    split = jnp.vectorize(jax.random.split, signature="()->(2)")(key)
    return split[..., 0], split[..., 1]
