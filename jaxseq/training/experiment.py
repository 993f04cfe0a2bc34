"""What every experiment script does around its model: K seeds, optimizer, `fit`, results.

An experiment's frozen `Config` carries the common fields below (with a comment
each, in the script), and its `main` reads top to bottom:

    state, history = training.train_seeds(config, init, loss_fn, sample_batch, eval_fn)
    values = training.evaluate(test_fn, state.params, *test_data, num_seeds=config.num_seeds)
    results = training.seed_results(values)        # test_mse, test_mse_std, ..._per_seed
    training.write_results(config.out_dir, results)

Common config fields (all required by `train_seeds`):
  seed: int               base seed; seed k of K uses `fold_in(key(seed), k)`
  num_seeds: int          K independent models trained at once with `jax.vmap`
  steps: int              updates per model
  batch_size: int         examples per update (checked > 0; used by `sample_batch`)
  optimizer: str          "adam", "adamw", "rmsprop" or "sgd"
  learning_rate: float    peak step size
  grad_clip: float        global-norm clip; 0 disables
  schedule: str           "constant", "cosine" or "linear" (with warmup_steps)
  warmup_steps: int
  log_every: int          steps between host syncs / log records
  eval_every: int         steps between evaluations (0: at the end only)
  checkpoint_every: int   steps between orbax checkpoints (0: none)
  resume: bool            continue from the latest checkpoint in out_dir
  tensorboard: bool       also write TensorBoard event files
  out_dir: str            config.json, metrics.jsonl, checkpoints/, results.json
Optional: weight_decay: float (default 0; decoupled for adamw, L2 otherwise).

Mesh fields (every experiment has them; `check_config` checks `mesh_data`):
  mesh_data: int          devices on the mesh's data axis (0: all; 1: no mesh)
  distributed: bool       join a multi-host run first (`join_distributed`)
so that `main` passes `batch_sharding=training.mesh_sharding(config, sample_batch, axes)`
to `train_seeds` (or `fit`) and the script ends with

    if __name__ == "__main__":
        config = cli.parse(Config)
        training.join_distributed(config)  # --distributed=True: before any other JAX call
        main(config)
"""

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxseq import cli, sharding
from jaxseq.training.loop import fit
from jaxseq.training.optim import OPTIMIZERS, SCHEDULES, make_optimizer
from jaxseq.training.seeds import seed_summary
from jaxseq.training.state import TrainState, init_state, make_train_step

COMMON_FIELDS = (
    "seed",
    "num_seeds",
    "steps",
    "batch_size",
    "optimizer",
    "learning_rate",
    "grad_clip",
    "schedule",
    "warmup_steps",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "resume",
    "tensorboard",
    "out_dir",
)


def check_config(config: Any, **positive: Any) -> None:
    """Rejects bad values of the common fields, `mesh_data` (if any) and `positive` ones, by name.

    Args:
      config: an experiment's frozen dataclass config with the common fields.
      **positive: further `name=value` pairs that must be positive numbers
        (e.g. `hidden_size=config.hidden_size`).

    Raises:
      ValueError: naming the field, the value and what was expected.
    """
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
    missing = [name for name in COMMON_FIELDS if not hasattr(config, name)]
    if missing:
        raise TypeError(f"{type(config).__name__} lacks the common fields {missing}")
    checks = {
        "num_seeds": config.num_seeds,
        "steps": config.steps,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "log_every": config.log_every,
        **positive,
    }
    for name, value in checks.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    for name in ("grad_clip", "warmup_steps", "eval_every", "checkpoint_every"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")
    if config.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {config.schedule!r}")
    mesh_data = getattr(config, "mesh_data", 0)  # optional field
    if isinstance(mesh_data, bool) or not isinstance(mesh_data, int) or mesh_data < 0:
        raise ValueError(f"mesh_data must be an int >= 0 (0: all devices), got {mesh_data!r}")


def mesh_sharding(config: Any, sample_batch: Callable, axes: Any, *, data: Any = None) -> Any:
    """The `batch_sharding` for `train_seeds` / `fit` that `config.mesh_data` asks for.

    The mesh holds the first `mesh_data` devices (0: all of them, every process's)
    on its "data" axis; each batch leaf is split along its batch axis over them, and
    the train step computes each slice on its own device (the gradient is averaged
    by XLA's all-reduce, so the numbers match one device up to float rounding).

    Args:
      config: the experiment's config with `mesh_data` (and `batch_size`).
      sample_batch: `(key, step) -> batch` for one seed, or `(key, step, data) -> batch`
        when `data` is given; only its output shapes are read (`jax.eval_shape`).
      axes: the batch axis of every leaf, an int or a pytree prefix of the batch
        (e.g. `(1, 0)` for time-major `xs [T, B, F]` and `targets [B]`).
      data: the `data` argument of `sample_batch`, or None.

    Returns:
      None when the data axis has one device (`mesh_data=1`, or one device in all),
      else a pytree of `NamedSharding` shaped like the batch.

    Raises:
      ValueError: naming `mesh_data` when it exceeds the devices, leaves out devices
        of a multi-process run, or does not divide a leaf's batch axis.
    """
    devices = jax.devices()
    size = config.mesh_data or len(devices)
    if size > len(devices):
        raise ValueError(
            f"mesh_data must be <= the number of devices ({len(devices)}), got {config.mesh_data}"
        )
    if size == 1:
        return None
    if size < len(devices) and jax.process_count() > 1:
        raise ValueError(
            f"mesh_data must be 0 or {len(devices)} (every device) in a run of "
            f"{jax.process_count()} processes, got {config.mesh_data}"
        )
    mesh = sharding.make_mesh(data=size, devices=devices[:size])
    args = (jax.random.key(0), np.int32(0)) + (() if data is None else (data,))
    shapes = jax.eval_shape(sample_batch, *args)
    try:
        return sharding.batch_sharding(mesh, shapes, axes)
    except ValueError as error:
        raise ValueError(
            f"mesh_data={config.mesh_data} ({size} devices) cannot split the batch of "
            f"batch_size={config.batch_size}: {error} (choose a batch_size divisible by "
            f"{size}, or --mesh_data=1)"
        ) from None


def place_state(state: Any, batch_sharding: Any) -> Any:
    """`state` replicated over the mesh of `batch_sharding` (unchanged when it is None).

    `fit` with a `batch_sharding` wants its state on the same mesh; `train_seeds`
    does this itself.
    """
    if batch_sharding is None:
        return state
    return sharding.replicate(state, jax.tree.leaves(batch_sharding)[0].mesh)


def join_distributed(config: Any) -> bool:
    """With `config.distributed`, joins the multi-process (multi-host) run.

    Call it first in `if __name__ == "__main__":`, before any other JAX call. The
    coordinator comes from `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and
    `JAX_PROCESS_ID` (`jaxseq.sharding.initialize`), else from JAX's own cluster
    detection (Cloud TPU pods, SLURM, Open MPI). Every process then runs the same
    command; the mesh spans the devices of all of them.

    Args:
      config: an experiment's config; its optional `distributed` field decides.

    Returns:
      Whether the distributed runtime was started.
    """
    if not getattr(config, "distributed", False):
        return False
    return sharding.initialize() or sharding.initialize(auto=True)


def seed_keys(config: Any, stream: int) -> jax.Array:
    """`[K]` keys of one named stream (0: init, 1: training, 2+: the script's own).

    Seed k of stream s is `fold_in(fold_in(key(seed), k), s)`, so adding seeds
    never changes the first ones.
    """
    base = jax.random.key(config.seed)
    return jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(base, k), stream))(
        np.arange(config.num_seeds)
    )


def train_seeds(
    config: Any,
    init: Callable[[jax.Array], Any],
    loss_fn: Callable,
    sample_batch: Callable[[jax.Array, jax.Array], Any],
    eval_fn: Callable[[Any], dict[str, jax.Array]] | None = None,
    *,
    data: Any = None,
    desc: str = "train",
    batch_sharding: Any = None,
) -> tuple[TrainState, list[dict]]:
    """Trains `config.num_seeds` models at once and returns the stacked final state.

    Writes `out_dir/config.json` first, then runs `fit` (metrics.jsonl, checkpoints,
    resume, NaN guard, progress bar) on the vmapped train step.

    Args:
      config: the experiment's config (see the module docstring for its fields).
      init: `key -> params` for one model (vmapped over `seed_keys(config, 0)`).
      loss_fn: `(params, batch, key) -> (loss, aux)` for one model.
      sample_batch: `(key, step) -> batch` for one model (vmapped over seeds), or
        `(key, step, data) -> batch` when `data` is given.
      eval_fn: `params -> {name: scalar}` run at `eval_every` and at the end.
      data: arrays passed to `sample_batch` as a jit argument (see `fit`).
      desc: label of the progress bar.
      batch_sharding: None, or the `NamedSharding` (or a pytree prefix of them) of
        one seed's batch, e.g. from `mesh_sharding(config, sample_batch, axes)`;
        the state is then replicated over its mesh and each device computes its
        slice of every batch (see `fit`).

    Returns:
      `(state, history)` from `fit`; every leaf of `state` has a leading `[K]` axis.
    """
    check_config(config)
    cli.save_config(config, config.out_dir)
    k = config.num_seeds
    params = init_seeds(init, seed_keys(config, 0))
    optimizer = make_optimizer(
        config.optimizer,
        config.learning_rate,
        grad_clip=config.grad_clip,
        weight_decay=getattr(config, "weight_decay", 0.0),  # optional field
        schedule=config.schedule,
        warmup_steps=config.warmup_steps,
        total_steps=config.steps if config.schedule != "constant" else None,
    )
    state = place_state(init_state(params, optimizer, num_seeds=k), batch_sharding)
    train_step = make_train_step(loss_fn, optimizer, num_seeds=k)
    return fit(
        train_step,
        state,
        sample_batch,
        key=seed_keys(config, 1),
        steps=config.steps,
        out_dir=config.out_dir,
        log_every=config.log_every,
        eval_fn=eval_fn,
        eval_every=config.eval_every,
        checkpoint_every=config.checkpoint_every,
        resume=config.resume,
        tensorboard=config.tensorboard,
        num_seeds=k,
        desc=desc,
        data=data,
        batch_sharding=batch_sharding,
    )


def init_seeds(init: Callable[[jax.Array], Any], keys: jax.Array) -> Any:
    """`init` for each of `[K]` keys, stacked: leaves `[K, ...]`.

    Equal to `jax.vmap(init)(keys)`, but compiles the un-batched `init` once and
    calls it K times: XLA's CPU compile of a vmapped QR (the orthogonal
    initialiser) takes seconds, a plain one a fraction of that.
    """
    one = jax.jit(init)
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *[one(k) for k in keys])


def run_summary(config: Any, start: float, history: list[dict]) -> dict[str, Any]:
    """The fields every results.json ends with: steps, seeds, wall time, last loss.

    Args:
      config: the experiment's config (reads `steps`, `num_seeds`).
      start: `time.perf_counter()` taken before training started.
      history: the records `fit` returned (the last one's mean loss is reported).

    Returns:
      `{"steps", "num_seeds", "train_seconds", "final_train_loss"}`.
    """
    return {
        "steps": config.steps,
        "num_seeds": config.num_seeds,
        "train_seconds": time.perf_counter() - start,
        "final_train_loss": history[-1]["loss"] if history else None,
    }


def seed_results(values: dict[str, Any]) -> dict[str, Any]:
    """Flattens per-seed values into `name` (mean), `name_std` and `name_per_seed`.

    Args:
      values: `{name: [K] values}` (e.g. from `evaluate(..., num_seeds=K)`) or
        `{name: float}` for quantities that do not depend on the seed.

    Returns:
      A flat dict for `write_results`; the headline number of each name is its mean.
    """
    out: dict[str, Any] = {}
    for name, value in values.items():
        if np.ndim(value) == 0:
            out[name] = float(value)
            continue
        summary = seed_summary(value)
        out[name] = summary["mean"]
        out[name + "_std"] = summary["std"]
        out[name + "_per_seed"] = summary["per_seed"]
    return out
