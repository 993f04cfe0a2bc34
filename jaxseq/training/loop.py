"""The training loop every experiment uses: `fit`.

Each step is one call of a jitted function that derives the batch and the step
key from `state.step` and applies `train_step`, so nothing is synced to the host
between sync points (logs, evaluations, checkpoints, the last step), and a
resumed run sees exactly the data and keys of an uninterrupted one.
"""

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from jaxseq import _checks
from jaxseq.training import checkpoint, records
from jaxseq.training.guard import NonFiniteError, find_bad_step
from jaxseq.training.loop_step import base_keys, make_loop_step
from jaxseq.training.seeds import evaluate, host_record
from jaxseq.training.state import TrainState, _check_num_seeds


class _Run(NamedTuple):
    """The fixed settings of one `fit` call (no mutable state)."""

    out_dir: Path
    steps: int
    log_every: int
    eval_every: int
    checkpoint_every: int
    eval_fn: Callable | None
    num_seeds: int | None
    manager: Any  # orbax CheckpointManager or None
    writer: Any  # tensorboardX SummaryWriter or None
    console: Console


def fit(
    train_step: Callable,
    state: TrainState,
    sample_batch: Callable[[jax.Array, jax.Array], Any],
    *,
    key: jax.Array,
    steps: int,
    out_dir: str | os.PathLike[str],
    log_every: int = 100,
    eval_fn: Callable[[Any], dict[str, jax.Array]] | None = None,
    eval_every: int = 0,
    checkpoint_every: int = 0,
    resume: bool = False,
    tensorboard: bool = False,
    num_seeds: int | None = None,
    desc: str = "train",
    data: Any = None,
    batch_sharding: Any = None,
) -> tuple[TrainState, list[dict]]:
    """Trains until `state.step == steps`, logging, evaluating and checkpointing.

        for s in range(state.step, steps):                  # one jitted call each
            batch = sample_batch(fold_in(data_key, s), s)
            state, metrics = train_step(state, batch, fold_in(step_key, s))
        # data_key, step_key = split(key); with K seeds all of this is vmapped

    At step t (counted from 1, after t updates) the loop syncs when `t` is a
    multiple of `log_every`, `eval_every` or `checkpoint_every`, or `t == steps`.
    At a sync it first checks the NaN guard, then (log/eval/last step) appends a
    record `{"step", "loss", "grad_norm", "param_norm", "update_norm", aux...,
    "eval_"+name..., "ms_per_step"}` to `out_dir/metrics.jsonl` (strict JSON,
    NaN -> null; with K seeds each metric is the mean plus a `name_per_seed`
    list), prints it, writes TensorBoard scalars, and then saves a checkpoint.
    Evaluation runs at multiples of `eval_every` and at the last step.
    `ms_per_step` excludes the first step (compilation), evaluation and saving.

    A fresh run (`resume=False`) empties `metrics.jsonl` and deletes
    `out_dir/checkpoints`. `resume=True` restores the latest checkpoint (if any),
    keeps the records up to its step and continues: parameters and records then
    equal an uninterrupted run's (timings aside).

    Args:
      train_step: from `make_train_step(..., num_seeds=num_seeds)`.
      state: the initial `TrainState` (donated: invalid after the call); on resume
        only its structure is used.
      sample_batch: `(key, step) -> batch`, pure and jittable (`step` is a traced
        int32 scalar).
      key: PRNG key of the run; `[K]` keys with K seeds.
      steps: total number of updates to reach.
      out_dir: run directory (created).
      log_every: steps between log records (> 0).
      eval_fn: `params -> {name: scalar}`, jittable (vmapped over seeds), or None.
      eval_every: steps between evaluations; 0 evaluates only at the last step.
      checkpoint_every: steps between checkpoints (also saved at the last step);
        0 saves none.
      resume: continue from the latest checkpoint under `out_dir/checkpoints`.
      tensorboard: also write TensorBoard event files to `out_dir` (needs
        `pip install 'jaxseq[tensorboard]'`).
      num_seeds: K when the state holds K stacked models, else None.
      desc: label of the progress bar.
      data: a pytree of arrays (e.g. the training set) handed to
        `sample_batch(key, step, data)` as an argument of the jitted step, shared
        by all seeds; None (default) calls `sample_batch(key, step)`. Passing a large
        set here rather than closing over it keeps it out of the compiled program.
      batch_sharding: None, or the sharding of the sampled batch (a
        `jax.sharding.Sharding` or a pytree prefix of the batch with them, e.g.
        from `jaxseq.sharding.batch_sharding`): each device then computes only its
        slice of the batch. Place `state` on the same mesh first (`replicate`).

    Returns:
      `(state, history)`: the final state and the list of records (those kept
      from before a resume included).

    Raises:
      NonFiniteError: (a `FloatingPointError`) when a loss or gradient norm is
        NaN/Inf (the state stays at the step before), or the parameters are; the
        message names the step, the metric and the last good checkpoint, and
        nothing after that checkpoint is saved.
    """
    _check_fit_args(
        train_step, sample_batch, eval_fn, steps, log_every, eval_every, checkpoint_every, num_seeds
    )
    _host_step(state, num_seeds)  # checks the state before anything is deleted
    if tensorboard:
        records.summary_writer_class()  # a missing tensorboardX fails before any work
    bases = (*base_keys(key, num_seeds), data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(soft_wrap=True, highlight=False)
    manager = writer = None
    try:
        manager, state = _start_checkpoints(out, state, resume, checkpoint_every, console)
        start = _host_step(state, num_seeds)
        history = records.start_metrics(out, start if resume else 0)
        if tensorboard and records.is_writer():
            writer = records.tensorboard_writer(out, purge_step=start + 1)
        run = _Run(out, steps, log_every, eval_every, checkpoint_every, eval_fn, num_seeds,
                   manager, writer, console)  # fmt: skip
        step_fn = make_loop_step(train_step, sample_batch, num_seeds, batch_sharding)
        state = _loop(run, step_fn, state, bases, start, history, desc)
    finally:
        if manager is not None:
            manager.wait_until_finished()
            manager.close()
        if writer is not None:
            writer.close()
    return state, history


def _loop(run: _Run, step_fn, state, bases, start: int, history: list, desc: str):
    """Runs steps `start+1 .. run.steps`, syncing where `fit` says."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
    )
    shown = run.console.is_terminal or run.console.is_jupyter
    with Progress(*columns, console=run.console, transient=True, disable=not shown) as bar:
        task = bar.add_task(desc, total=run.steps, completed=start, rate="", loss="-")
        mark = (start, time.perf_counter())
        for t in range(start + 1, run.steps + 1):
            state, metrics = step_fn(state, bases)
            bar.advance(task)
            if t == start + 1:  # time compilation apart from the steady state
                jax.block_until_ready(metrics)
                mark = (t, time.perf_counter())
            if _is_sync(run, t):
                record = _sync(run, state, metrics, t, mark)
                if record is not None:
                    history.append(record)
                    bar.update(task, loss=_loss_text(record), rate=_rate_text(record))
                mark = (t, time.perf_counter())
    return state


def _is_sync(run: _Run, t: int) -> bool:
    every = (run.log_every, run.eval_every, run.checkpoint_every)
    return t == run.steps or any(n and t % n == 0 for n in every)


def _sync(run: _Run, state: TrainState, metrics: dict, t: int, mark: tuple) -> dict | None:
    """Guard, then record (log/eval points), then checkpoint; returns the record or None."""
    host_step, host_metrics = jax.device_get((state.step, metrics))
    elapsed = time.perf_counter() - mark[1]
    _guard(run, t, host_step, host_metrics)
    is_eval = run.eval_fn is not None and (
        t == run.steps or (run.eval_every > 0 and t % run.eval_every == 0)
    )
    record = None
    if is_eval or t == run.steps or t % run.log_every == 0:
        record = {"step": t, **host_record(host_metrics, run.num_seeds)}
        record["ms_per_step"] = 1e3 * elapsed / (t - mark[0]) if t > mark[0] else None
        if is_eval:
            values = evaluate(run.eval_fn, state.params, num_seeds=run.num_seeds)
            record.update(host_record(values, run.num_seeds, prefix="eval_"))
        _write(run, record)
    if run.checkpoint_every > 0 and (t == run.steps or t % run.checkpoint_every == 0):
        checkpoint.save(run.manager, t, state)
    return record


def _guard(run: _Run, t: int, host_step: Any, host_metrics: dict) -> None:
    """Raises `NonFiniteError` if an update before step `t` was rejected as non-finite."""
    bad = find_bad_step(t, host_step, host_metrics)
    if bad is not None:
        step, metric, value, seed = bad
        saved = None if run.manager is None else run.manager.latest_step()
        path = None if run.manager is None else checkpoint.path_of(run.manager, saved)
        raise NonFiniteError(step, metric, value, checkpoint=path, seed=seed)


def _write(run: _Run, record: dict) -> None:
    """Appends the record to metrics.jsonl, prints its line, writes TensorBoard."""
    records.append_metrics(run.out_dir, record)
    run.console.print(records.format_record(record), markup=False)
    if run.writer is not None:
        records.write_tensorboard(run.writer, record)


def _loss_text(record: dict) -> str:
    return "nan" if record.get("loss") is None else f"{record['loss']:.4g}"


def _rate_text(record: dict) -> str:
    ms = record["ms_per_step"]
    return "" if ms is None else f"{1e3 / max(ms, 1e-6):.1f} steps/s"


def _start_checkpoints(out: Path, state, resume: bool, checkpoint_every: int, console):
    """Opens the checkpoint manager; restores (resume) or clears (fresh run)."""
    if not resume:
        if checkpoint.clear(out):
            console.print(f"fresh run: deleted the old checkpoints in {out}", markup=False)
    elif checkpoint.checkpoint_dir(out).exists():
        manager = checkpoint.open_manager(out)
        restored = checkpoint.restore(manager, state)
        if restored is not None:
            step = manager.latest_step()
            console.print(f"resumed from {checkpoint.path_of(manager, step)}", markup=False)
            return manager, restored
        return manager, state
    else:
        console.print(f"resume: no checkpoint in {out}, starting afresh", markup=False)
    manager = checkpoint.open_manager(out) if checkpoint_every > 0 else None
    return manager, state


def _host_step(state: TrainState, num_seeds: int | None) -> int:
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState, got {type(state).__name__}")
    step = np.asarray(jax.device_get(state.step))
    want = () if num_seeds is None else (num_seeds,)
    if step.shape != want:
        raise ValueError(
            f"state.step must have shape {want} for num_seeds={num_seeds}, got {step.shape}"
        )
    if step.size and np.any(step != step.reshape(-1)[0]):
        raise ValueError(f"state.step must be equal across seeds, got {step.tolist()}")
    return int(step.reshape(-1)[0])


def _check_fit_args(
    train_step, sample_batch, eval_fn, steps, log_every, eval_every, checkpoint_every, num_seeds
) -> None:
    for name, fn in (("train_step", train_step), ("sample_batch", sample_batch)):
        if not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"eval_fn must be callable or None, got {type(eval_fn).__name__}")
    _checks.check_positive_int("steps", steps)
    _checks.check_positive_int("log_every", log_every)
    for name, value in (("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0 (0 disables), got {value!r}")
    if num_seeds is not None:
        _check_num_seeds(num_seeds)
