"""Vanishing and exploding gradients: a five-part study of gradient flow through time.

1. Decay at initialisation: log10 ‖∂L/∂h_t‖ against the lag T−1−t on the adding
   problem and its least-squares slope per cell (`decay_rate_per_step`, decades
   per step), next to the Elman bound log10 σ_max(U) (Pascanu et al. 2013).
2. Learning vs sequence length on the adding problem: test MSE < 0.01 (vs 1/6 for
   predicting the mean) counts as solved (Le et al. 2015; Arjovsky et al. 2016).
3. The exploding regime: Elman-tanh with ρ(U) > 1, with and without global-norm
   clipping (Pascanu et al. 2013): loss and gradient norm at every step.
4. Gate ablations at one T: no forget gate (the 1997 LSTM), coupled gates, forget
   bias 0 vs 1 (Jozefowicz et al. 2015), GRU without reset; gate saturation.
5. The gradient profile during training, on a fixed batch every `track_every`
   steps: a heat map (step × lag).

Cells are registry names (`jaxseq.cells.registry.names()`: lstm, lstm_fb0, irnn,
gru, ...); `NAME@R` makes each recurrent block U of NAME an orthogonal matrix
times R, so ρ(U) = σ_max(U) = R (`elman@0.9`: tanh Elman RNN, ρ(U) = 0.9). Every
part trains `num_seeds` models at once with `jax.vmap`; cells `NAME@R` share
NAME's compiled programs.

    .venv/bin/python -m experiments.vanishing_gradients --quick=True  # 3 min on 2 busy CPU cores
    .venv/bin/python -m experiments.vanishing_gradients               # 19 min on 2 busy CPU cores
    .venv/bin/python -m experiments.vanishing_gradients --cells=lstm,gru --seq_lens=50,100

Expected (the default run, 3 seeds; CPU times with the 2 cores shared, load 5-7):
decay rates at init (decades/step) irnn 0.000, elman@1.1 −0.015, lstm −0.032,
elman@1.0 −0.035, elman@0.9 −0.070, gru −0.131, lstm_fb0 −0.133, elman@0.5 −0.314
(below its bound log10 0.5 = −0.301); LSTM (either forget bias) and GRU solve the
adding problem at T = 25 and 50 (3/3 seeds), no cell at T = 200 in 600 steps, no
Elman/IRNN at any T; unclipped SGD at ρ = 3 takes an update of norm ~6e4; at T = 50
only lstm_no_forget fails among the gate ablations.
Writes `out_dir/report.md`, `results.json`, `config.json`, five PNG plots, and
`runs/<cell>_T<T>/metrics.jsonl` per adding run of parts 2 and 4 (trained with
`training.fit`: `resume`, `checkpoint_every`, `eval_every`, `tensorboard` apply to them).
`--mesh_data` splits every training batch of parts 2-5 over that many devices (part 1
trains nothing; the gradient profiles and test metrics run unsplit).
"""

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from rich.console import Console
from rich.progress import track

import jaxseq
from jaxseq import cli, data, diagnostics, initializers, models, training
from jaxseq.cells import registry
from jaxseq.diagnostics import study
from jaxseq.training.optim import OPTIMIZERS


@dataclasses.dataclass(frozen=True)
class Config:
    quick: bool = False  # smoke mode: the fields still at their defaults take QUICK's values
    cells: str = "elman@0.5,elman@0.9,elman@1.0,elman@1.1,irnn,lstm_fb0,lstm,gru"  # parts 1-2
    seq_lens: str = "25,50,100,200"  # part 2: adding-problem lengths T
    decay_len: int = 100  # part 1: T of the gradient profile at initialisation
    ablation_cells: str = "lstm,lstm_fb0,lstm_no_forget,lstm_coupled,gru,gru_no_reset"  # part 4
    ablation_len: int = 50  # part 4: T of the ablation runs
    explode_radii: str = "1.5,3.0"  # part 3: ρ(U) > 1 of the Elman-tanh runs
    explode_len: int = 50  # part 3: T
    explode_steps: int = 300  # part 3: updates per model
    explode_optimizer: str = "sgd"  # part 3: optimizer (plain SGD feels the gradient's scale)
    explode_learning_rate: float = 0.01  # part 3: step size
    explode_grad_clip: float = 1.0  # part 3: clip of the clipped runs (the others: none)
    track_cells: str = "elman@1.0,lstm"  # part 5: cells whose profile is tracked
    track_len: int = 50  # part 5: T
    track_every: int = 50  # part 5: steps between profiles
    hidden_size: int = 32  # width of every RNN
    test_size: int = 512  # held-out sequences per T (one fixed key)
    seed: int = 0  # base seed; seed k uses fold_in(key(seed), k)
    num_seeds: int = 3  # models per cell, trained at once with jax.vmap
    steps: int = 600  # updates per model in parts 2, 4, 5
    batch_size: int = 32  # sequences per update, and in the fixed profile batch
    optimizer: str = "adam"  # parts 2, 4, 5: adam, adamw, rmsprop or sgd
    learning_rate: float = 1e-2  # peak step size
    grad_clip: float = 1.0  # global-norm clip (Pascanu et al. 2013); 0 disables
    schedule: str = "cosine"  # constant, cosine or linear decay to 0 at `steps`
    warmup_steps: int = 0  # linear warm-up from 0
    log_every: int = 200  # steps between host syncs and log records
    eval_every: int = 0  # steps between test evaluations of an adding run (0: at the end)
    checkpoint_every: int = 0  # steps between orbax checkpoints of an adding run (0: none)
    resume: bool = False  # continue each adding run from its latest checkpoint
    tensorboard: bool = False  # also write TensorBoard event files per adding run
    out_dir: str = "runs/vanishing_gradients"  # report.md, results.json, plots, runs/
    mesh_data: int = 0  # devices on the mesh's data axis (0: all); batches split over them
    distributed: bool = False  # join a multi-host run (JAX_COORDINATOR_ADDRESS etc., or auto)


QUICK = {  # --quick=True
    "cells": "elman@0.5,elman@1.0,lstm",
    "seq_lens": "20,40",
    "decay_len": 40,
    "ablation_cells": "lstm,lstm_no_forget",
    "ablation_len": 20,
    "explode_len": 20,
    "explode_steps": 150,
    "track_cells": "lstm",
    "track_len": 20,
    "track_every": 25,
    "hidden_size": 16,
    "test_size": 256,
    "num_seeds": 2,
    "steps": 300,
    "log_every": 300,
    "out_dir": "runs/vanishing_gradients_quick",
}
BASELINE_MSE = 1.0 / 6.0  # predicting the mean, E[(U1 + U2 - 1)^2]
SOLVED_MSE = 0.01  # Le et al. 2015's criterion: "MSE below 0.01"
PLOTS = ("decay.png", "adding.png", "exploding.png", "ablations.png", "tracking.png")


class CellSpec(NamedTuple):
    """A cell of the study: `label` as written (`elman@0.9`), registry `name`, ρ(U) or None."""

    label: str
    name: str
    radius: float | None


def _overrides(radius: float | None) -> dict:
    if radius is None:
        return {}
    return {"w_h_init": initializers.scaled_to_spectral_radius(initializers.orthogonal(), radius)}


def parse_cells(field: str, text: str) -> tuple[CellSpec, ...]:
    """Parses a comma-separated list of `NAME` or `NAME@R`; errors name `field`."""
    specs = []
    for label in (part.strip() for part in text.split(",")):
        name, at, radius = label.partition("@")
        try:
            radius = float(radius) if at else None
        except ValueError:
            raise ValueError(f"{field}: {label!r} must be NAME@RADIUS, a number") from None
        if radius is not None and not radius > 0:
            raise ValueError(f"{field}: the radius of {label!r} must be > 0")
        try:
            registry.by_name(name, 1, **_overrides(radius))
        except (ValueError, TypeError) as error:
            raise ValueError(f"{field}: {label!r}: {error}") from None
        specs.append(CellSpec(label, name, radius))
    if len({spec.label for spec in specs}) != len(specs):
        raise ValueError(f"{field} must not repeat a cell, got {text!r}")
    return tuple(specs)


def parse_numbers(field: str, text: str, kind: type, minimum: float) -> tuple:
    """Comma-separated distinct `kind` values, ints >= `minimum`, floats > `minimum`."""
    try:
        values = tuple(kind(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{field} must list {kind.__name__}s, got {text!r}") from None
    bad = [v for v in values if (v < minimum if kind is int else not v > minimum)]
    if bad or len(set(values)) != len(values):
        relation = ">=" if kind is int else ">"
        raise ValueError(f"{field} must hold distinct values {relation} {minimum}, got {text!r}")
    return values


def resolve(config: Config) -> Config:
    """Applies QUICK (to the fields at their defaults), then checks every field by name."""
    if config.quick:
        default = Config()
        quick = {k: v for k, v in QUICK.items() if getattr(config, k) == getattr(default, k)}
        config = dataclasses.replace(config, **quick)
    training.check_config(config, hidden_size=config.hidden_size, test_size=config.test_size)
    for field in ("decay_len", "ablation_len", "explode_len", "track_len"):
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"{field} must be an int >= 2, got {value!r}")
    for field in ("explode_steps", "track_every", "explode_learning_rate", "explode_grad_clip"):
        if isinstance(getattr(config, field), bool) or not getattr(config, field) > 0:
            raise ValueError(f"{field} must be > 0, got {getattr(config, field)!r}")
    if config.explode_optimizer not in OPTIMIZERS:
        raise ValueError(f"explode_optimizer must be one of {OPTIMIZERS}")
    for field in ("cells", "ablation_cells", "track_cells"):
        parse_cells(field, getattr(config, field))
    parse_numbers("seq_lens", config.seq_lens, int, 2)
    parse_numbers("explode_radii", config.explode_radii, float, 1.0)
    return config


# model, data and the compiled programs

adding_data = jax.jit(data.adding, static_argnums=(1, 2))  # (key, batch, T) -> (xs, targets)
decay_rates = jax.jit(jnp.vectorize(study.decay_rate, signature="(t)->()"))  # [..., T] -> [...]


def build_model(cell: jaxseq.Cell) -> models.Model:
    """RNN + a linear readout of the last state: the adding problem's regression."""
    return models.classifier(jaxseq.rnn(cell), 1)


def mse(model: models.Model, params, xs, targets):
    prediction = model.apply(params, xs)[..., 0] + 1.0  # start from the mean, 1
    return models.mean_squared_error(prediction, targets)


def init_params(config: Config, spec: CellSpec) -> dict:
    """`[K]` stacked initial params; seed k's key is the same for every cell."""
    cell = registry.by_name(spec.name, config.hidden_size, **_overrides(spec.radius))
    init = partial(build_model(cell).init, input_size=2)
    seeds = [init(key) for key in training.seed_keys(config, 0)]  # op by op: no jit per cell
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *seeds)


@functools.cache
def test_data(config: Config, seq_len: int):
    """The held-out adding set of length `seq_len`: one key for every cell."""
    return adding_data(jax.random.key(10_000 + config.seed), config.test_size, seq_len)


def fixed_batch(config: Config, seq_len: int):
    """The profile batch: the first `batch_size` test sequences."""
    xs, targets = test_data(config, seq_len)
    return xs[:, : config.batch_size], targets[: config.batch_size]


def _profile(cell, params, xs, targets):
    """log10 ‖∂L/∂carry‖ by lag for one adding model (the loss reads the last state)."""

    def loss(ys):
        prediction = models.dense_apply(params["readout"], ys[-1])[..., 0] + 1.0
        return models.mean_squared_error(prediction, targets)

    return study.gradient_profile(cell, params["rnn"][0][0], xs, loss)


def _test_metrics(model, cell, params, xs, targets) -> dict:
    """Test MSE, and the saturated fractions of every gate of a gated cell."""
    out = {"test_mse": mse(model, params, xs, targets)}
    if cell.name.partition("(")[0] in diagnostics.gates.SUPPORTED:
        for gate, stat in diagnostics.gate_saturation(cell, params["rnn"][0][0], xs).items():
            out[f"gate_{gate}_low"], out[f"gate_{gate}_high"] = stat.low, stat.high
    return out


class Programs(NamedTuple):
    """What one (cell name, T) compiles; `NAME@R` cells share NAME's (inits differ only)."""

    optimizer: optax.GradientTransformation
    loss_fn: Callable  # (params, batch, key) -> (loss, {})
    sample_batch: Callable  # (key, step) -> (xs, targets), split over the mesh_data devices
    batch_sharding: Any  # of (xs [T, B, 2], targets [B]), or None (see `place`)
    train_step: Callable  # K seeds
    test_fn: Callable  # (params, xs, targets) -> {"test_mse", gate stats}
    profile: Callable  # ([K] params, xs, targets) -> [K, T] log10 profiles by lag


@functools.cache
def programs(name: str, seq_len: int, config: Config) -> Programs:
    cell = registry.by_name(name, config.hidden_size)  # initialisers never enter a step
    model = build_model(cell)

    def loss_fn(params, batch, key):
        return mse(model, params, *batch), {}

    def adding_batch(key, step):
        return data.adding(key, config.batch_size, seq_len)

    batch_sharding = training.mesh_sharding(config, adding_batch, (1, 0))  # xs [T,B,2], y [B]

    def sample_batch(key, step):  # constrained here: `study.track_training` takes no sharding
        batch = adding_batch(key, step)
        if batch_sharding is None:
            return batch
        return jax.lax.with_sharding_constraint(batch, batch_sharding)

    optimizer = training.make_optimizer(
        config.optimizer,
        config.learning_rate,
        grad_clip=config.grad_clip,
        schedule=config.schedule,
        warmup_steps=config.warmup_steps,
        total_steps=config.steps if config.schedule != "constant" else None,
    )
    train_step = training.make_train_step(loss_fn, optimizer, num_seeds=config.num_seeds)
    profile = jax.jit(jax.vmap(partial(_profile, cell), (0, None, None)))
    test_fn = partial(_test_metrics, model, cell)
    return Programs(optimizer, loss_fn, sample_batch, batch_sharding, train_step, test_fn, profile)


def place(program: Programs, state: training.TrainState) -> training.TrainState:
    """`state` replicated over the mesh that `program`'s batches are split over (if any)."""
    return training.place_state(state, program.batch_sharding)


# the five parts


def init_profiles(config: Config, specs, seq_len: int, desc: str) -> dict:
    """Per cell: `[K, T]` profiles at init, `[K]` decay rates, `[K]` Elman bounds or None."""
    xs, targets = fixed_batch(config, seq_len)
    out = {}
    for spec in track(specs, description=desc, transient=True, disable=not _terminal()):
        params = init_params(config, spec)
        profiles = programs(spec.name, seq_len, config).profile(params, xs, targets)
        cell_params, bound = params["rnn"][0][0], None
        if isinstance(cell_params, jaxseq.ElmanParams):  # |f'| <= 1 for tanh and relu
            bound = np.log10(np.asarray(diagnostics.max_singular_value(cell_params.w_h)))
        out[spec.label] = (np.asarray(profiles), np.asarray(decay_rates(profiles)), bound)
    return out


def _terminal() -> bool:
    console = Console()
    return console.is_terminal or console.is_jupyter


def part_decay(config: Config) -> dict:
    measured = init_profiles(config, parse_cells("cells", config.cells), config.decay_len, "1/5")
    rates = {cell: training.seed_summary(m[1]) for cell, m in measured.items()}
    return {
        "decay_rate_per_step": {cell: r["mean"] for cell, r in rates.items()},
        "decay_rate_per_step_std": {cell: r["std"] for cell, r in rates.items()},
        "decay_rate_per_step_per_seed": {cell: r["per_seed"] for cell, r in rates.items()},
        "decay_bound_per_step": {
            c: float(np.mean(m[2])) for c, m in measured.items() if m[2] is not None
        },
        "decay_profile": {cell: np.mean(m[0], axis=0) for cell, m in measured.items()},
    }


def adding_run(config: Config, spec: CellSpec, seq_len: int) -> dict:
    """K seeds of `spec` trained with `fit` on the adding problem; test MSE, solved fraction."""
    program, test = programs(spec.name, seq_len, config), test_data(config, seq_len)
    state = training.init_state(
        init_params(config, spec), program.optimizer, num_seeds=config.num_seeds
    )
    try:
        state, _ = training.fit(
            program.train_step,
            place(program, state),
            program.sample_batch,
            key=training.seed_keys(config, 1),
            steps=config.steps,
            out_dir=Path(config.out_dir) / "runs" / f"{spec.label}_T{seq_len}",
            log_every=config.log_every,
            eval_fn=(lambda params: program.test_fn(params, *test)) if config.eval_every else None,
            eval_every=config.eval_every,
            checkpoint_every=config.checkpoint_every,
            resume=config.resume,
            tensorboard=config.tensorboard,
            num_seeds=config.num_seeds,
            desc=f"{spec.label} T={seq_len}",
            batch_sharding=program.batch_sharding,
        )
    except training.NonFiniteError as error:  # fit stops the run: every seed counts as failed
        failed = training.seed_results({"test_mse": np.full(config.num_seeds, np.nan)})
        return {**failed, "solved_fraction": 0.0, "diverged": str(error)}
    values = training.evaluate(program.test_fn, state.params, *test, num_seeds=config.num_seeds)
    solved = float(np.mean(values["test_mse"] < SOLVED_MSE))
    return {**training.seed_results(values), "solved_fraction": solved}


def part_adding(config: Config, runs: dict, specs, seq_lens) -> dict:
    """Parts 2 and 4: `{cell: {T: run}}`; `runs` caches (cell, T) across the parts."""
    for spec in specs:
        for seq_len in seq_lens:
            if (spec.label, seq_len) not in runs:
                runs[spec.label, seq_len] = adding_run(config, spec, seq_len)
    return {spec.label: {str(t): runs[spec.label, t] for t in seq_lens} for spec in specs}


def part_explode(config: Config) -> dict:
    """Part 3: Elman-tanh, ρ(U) > 1, clip off/on × radii × seeds in one vmapped program.

    The clip is a per-model optimizer hyperparameter (`optax.inject_hyperparams`,
    ∞ = no clipping), so every model shares one compiled train step.
    """
    radii = parse_numbers("explode_radii", config.explode_radii, float, 1.0)
    specs = [CellSpec(f"elman@{r:g}", "elman", r) for r in radii]
    at_init = init_profiles(config, specs, config.decay_len, "3/5 at init")
    clips, k = (0.0, config.explode_grad_clip), config.num_seeds
    num_models = len(clips) * len(specs) * k
    params = [init_params(config, spec) for spec in specs] * len(clips)
    params = jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *params)
    max_norms = np.repeat([c if c > 0 else np.inf for c in clips], len(specs) * k)
    optimizer, state = _clip_per_model(config, params, max_norms)
    program = programs("elman", config.explode_len, config)
    trace = study.track_training(
        training.make_train_step(program.loss_fn, optimizer, num_seeds=num_models),
        place(program, state),
        program.sample_batch,
        key=jnp.concatenate([training.seed_keys(config, 1)] * (num_models // k)),
        steps=config.explode_steps,
        probe_every=max(1, config.explode_steps // 20),
        num_seeds=num_models,
        desc="3/5 exploding regime",
    )
    final_radius = np.asarray(diagnostics.spectral_radius(trace.state.params["rnn"][0][0].w_h))
    runs = {}
    for i, (clip, spec) in enumerate((c, s) for c in clips for s in specs):
        seeds = slice(i * k, (i + 1) * k)
        runs[f"{spec.label} clip={clip:g}"] = {
            "radius": spec.radius,
            "grad_clip": clip,
            "final_radius": float(np.mean(final_radius[seeds])),
            **_curves(trace.metrics, seeds),
        }
    growth = {cell: float(np.mean(m[1])) for cell, m in at_init.items()}
    return {"runs": runs, "radii": radii, "slope_at_init": growth}


def _clip_per_model(config: Config, params, max_norms: np.ndarray):
    """`explode_optimizer` behind a global-norm clip with one threshold per model (∞: none)."""
    core = training.make_optimizer(
        config.explode_optimizer, config.explode_learning_rate, grad_clip=0.0
    )
    optimizer = optax.chain(optax.inject_hyperparams(optax.clip_by_global_norm)(max_norm=1.0), core)
    state = training.init_state(params, optimizer, num_seeds=len(max_norms))
    thresholds = {"max_norm": jnp.asarray(max_norms, jnp.float32)}
    clip_state = state.opt_state[0]._replace(hyperparams=thresholds)
    return optimizer, state._replace(opt_state=(clip_state, *state.opt_state[1:]))


def _curves(metrics: dict, seeds: slice) -> dict:
    """Summaries and per-step curves (mean over seeds) of one part-3 run."""
    loss, grad, update = (metrics[n][:, seeds] for n in ("loss", "grad_norm", "update_norm"))
    finite = np.isfinite(loss) & np.isfinite(grad)
    with np.errstate(all="ignore"):
        loss, grad = np.where(finite, loss, np.nan), np.where(finite, grad, np.nan)
        return {
            "final_loss": float(np.nanmean(loss[-max(1, len(loss) // 10) :])),
            "max_grad_norm": float(np.nanmax(grad)),
            "median_grad_norm": float(np.nanmedian(grad)),
            "max_update_norm": float(np.nanmax(np.where(finite, update, np.nan))),
            "nonfinite_steps": int(np.sum(~finite)),
            "loss_curve": np.nanmean(loss, axis=1),
            "log10_grad_norm_curve": np.nanmean(np.log10(grad), axis=1),
        }


def part_track(config: Config) -> dict:
    """Part 5: the profile on a fixed batch every `track_every` steps (K seeds each)."""
    xs, targets = fixed_batch(config, config.track_len)
    out = {}
    for spec in parse_cells("track_cells", config.track_cells):
        program = programs(spec.name, config.track_len, config)
        state = training.init_state(
            init_params(config, spec), program.optimizer, num_seeds=config.num_seeds
        )
        trace = study.track_training(
            program.train_step,
            place(program, state),
            program.sample_batch,
            key=training.seed_keys(config, 1),
            steps=config.steps,
            probe=lambda params: program.profile(params, xs, targets),
            probe_every=config.track_every,
            num_seeds=config.num_seeds,
            desc=f"5/5 tracking {spec.label} T={config.track_len}",
        )
        test = test_data(config, config.track_len)
        values = training.evaluate(
            program.test_fn, trace.state.params, *test, num_seeds=config.num_seeds
        )
        out[spec.label] = {
            "steps": trace.probe_steps,
            "log10_grad_norm": np.mean(trace.probes, axis=1),  # [checkpoint, lag]
            "decay_rate": np.mean(np.asarray(decay_rates(trace.probes)), axis=1),
            "test_mse": float(np.mean(values["test_mse"])),
            "loss_curve": np.mean(trace.metrics["loss"], axis=1),
        }
    return out


# findings: one sentence per part, computed from the numbers


def _fmt(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3g}"


def finding_decay(part: dict) -> str:
    rates = {c: r for c, r in part["decay_rate_per_step"].items() if np.isfinite(r)}
    if not rates:
        return "No cell gave a usable gradient profile (every norm underflowed)."
    ranked = sorted(rates, key=rates.get, reverse=True)
    listed = ", ".join(f"{c} {rates[c]:+.3f} (×{10 ** rates[c]:.3g})" for c in ranked)
    bounds = part["decay_bound_per_step"]
    within = [c for c in bounds if c in rates and rates[c] <= bounds[c] + 5e-3]
    return (
        "At initialisation log10 ‖∂L/∂h‖ changes per step of lag by (factor per step), "
        f"slowest decay first: {listed}; "
        f"{len(within)} of {len(bounds)} Elman cells decay at least as fast as log10 σ_max(U)."
    )


def finding_adding(table: dict) -> str:
    reach = {}
    for cell, by_len in table.items():
        solved = [int(t) for t, run in by_len.items() if run["solved_fraction"] >= 0.5]
        reach[cell] = f"T ≤ {max(solved)}" if solved else "none"
    longest = max(int(t) for t in next(iter(table.values())))
    at_longest = [c for c, v in table.items() if v[str(longest)]["solved_fraction"] >= 0.5]
    diverged = [
        f"{c} T = {t}" for c, v in table.items() for t, run in v.items() if "diverged" in run
    ]
    return (
        f"Longest T solved (test MSE < {SOLVED_MSE}) by at least half the seeds: "
        + ", ".join(f"{c} {r}" for c, r in reach.items())
        + f"; at T = {longest}: {', '.join(at_longest) or 'no cell'}"
        + (f"; stopped by a non-finite gradient: {', '.join(diverged)}." if diverged else ".")
    )


def finding_explode(part: dict, clip: float) -> str:
    def values(c: float, key: str) -> str:
        return " / ".join(_fmt(part["runs"][f"elman@{r:g} clip={c:g}"][key]) for r in part["radii"])

    keys = ("max_grad_norm", "max_update_norm", "final_radius", "final_loss", "nonfinite_steps")
    free, clipped = ([values(c, k) for k in keys] for c in (0.0, clip))
    return (
        f"For ρ(U) = {' / '.join(f'{r:g}' for r in part['radii'])} (slope at init "
        f"{' / '.join(f'{v:+.3f}' for v in part['slope_at_init'].values())} decades/step), "
        f"without clipping ‖g‖ peaked at {free[0]}, the largest update was {free[1]}, ρ(U) "
        f"ended at {free[2]} and the final loss was {free[3]} ({free[4]} non-finite steps); "
        f"with clipping at {clip:g}: largest update {clipped[1]}, ρ(U) {clipped[2]}, final "
        f"loss {clipped[3]} ({clipped[4]} non-finite steps; predicting the mean: "
        f"{BASELINE_MSE:.3f})."
    )


def finding_ablation(table: dict, seq_len: int) -> str:
    ranked = sorted(table, key=lambda c: np.nan_to_num(table[c]["test_mse"], nan=np.inf))
    listed = ", ".join(
        f"{c} {_fmt(table[c]['test_mse'])} ({table[c]['solved_fraction']:.0%} solved)"
        for c in ranked
    )
    return f"At T = {seq_len}, by mean test MSE: {listed}."


def finding_track(track: dict, seq_len: int) -> str:
    parts = []
    for cell, run in track.items():
        far = run["log10_grad_norm"][:, -1]
        parts.append(
            f"{cell} slope {run['decay_rate'][0]:+.3f} → {run['decay_rate'][-1]:+.3f} "
            f"decades/step, log10 ‖∂L/∂h‖ at lag {seq_len - 1} {_fmt(far[0])} → {_fmt(far[-1])} "
            f"(test MSE {_fmt(run['test_mse'])})"
        )
    last = int(next(iter(track.values()))["steps"][-1])
    return f"From step 0 to {last} at T = {seq_len}: " + "; ".join(parts) + "."


# plots (matplotlib with the Agg backend: `pip install 'jaxseq[plot]'`)


def _figure(columns: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, columns, figsize=(5.5 * columns + 1.5, 4.3), squeeze=False)
    return fig, axes[0]


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), values, np.nan)


def _thresholds(ax) -> None:
    ax.axhline(SOLVED_MSE, color="k", ls=":", lw=1, label=f"solved ({SOLVED_MSE})")
    ax.axhline(BASELINE_MSE, color="k", ls="--", lw=1, label="predict the mean (1/6)")


def plot_decay(part: dict, path: Path) -> None:
    fig, (ax,) = _figure()
    for cell, profile in part["decay_profile"].items():
        ax.plot(_finite(profile), label=f"{cell} ({part['decay_rate_per_step'][cell]:+.3f}/step)")
    ax.set(xlabel="lag T−1−t", ylabel="log10 ‖∂L/∂h_t‖", title="Gradient at initialisation")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_adding(table: dict, path: Path) -> None:
    fig, (ax,) = _figure()
    for cell, by_len in table.items():
        lens = [int(t) for t in by_len]
        (line,) = ax.plot(lens, _finite([by_len[str(t)]["test_mse"] for t in lens]), "o-")
        line.set_label(cell)
        for t in lens:
            seeds = _finite(by_len[str(t)]["test_mse_per_seed"])
            ax.plot([t] * len(seeds), seeds, ".", color=line.get_color(), alpha=0.4)
    _thresholds(ax)
    ax.set(xscale="log", yscale="log", xlabel="T", ylabel="test MSE (dots: seeds)",
           title="Adding problem: test MSE vs T")  # fmt: skip
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_explode(part: dict, path: Path) -> None:
    fig, (left, right) = _figure(2)
    for name, run in part["runs"].items():
        style = "-" if run["grad_clip"] > 0 else "--"
        left.plot(_finite(run["loss_curve"]), style, label=name)
        right.plot(_finite(run["log10_grad_norm_curve"]), style, label=name)
    left.set(yscale="log", xlabel="step", ylabel="training MSE", title="Loss (mean over seeds)")
    right.set(xlabel="step", ylabel="log10 ‖g‖ (before clipping)", title="Gradient norm")
    left.legend(fontsize=7)
    _save(fig, path)


def plot_ablation(table: dict, seq_len: int, path: Path) -> None:
    fig, (ax,) = _figure()
    cells = list(table)
    ax.bar(range(len(cells)), _finite([table[c]["test_mse"] for c in cells]), alpha=0.5)
    for i, cell in enumerate(cells):
        seeds = _finite(table[cell]["test_mse_per_seed"])
        ax.plot([i] * len(seeds), seeds, "k.")
    _thresholds(ax)
    ax.set_xticks(range(len(cells)), cells, rotation=20)
    ax.set(yscale="log", ylabel="test MSE (dots: seeds)", title=f"Gate ablations, T = {seq_len}")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_track(track: dict, path: Path) -> None:
    fig, axes = _figure(len(track))
    for ax, (cell, run) in zip(axes, track.items()):
        image = _finite(run["log10_grad_norm"]).T  # [lag, checkpoint]
        extent = (run["steps"][0], run["steps"][-1], 0, image.shape[0] - 1)
        shown = ax.imshow(image, aspect="auto", origin="lower", extent=extent)
        fig.colorbar(shown, ax=ax, label="log10 ‖∂L/∂h_t‖")
        ax.set(xlabel="training step", ylabel="lag T−1−t", title=f"{cell}: gradient profile")
    _save(fig, path)


# the report


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _solved(run: dict) -> str:
    k = len(run["test_mse_per_seed"])
    mse = "diverged" if "diverged" in run else _fmt(run["test_mse"])
    return f"{round(run['solved_fraction'] * k)}/{k} ({mse})"


def _saturation(run: dict) -> str:
    gates = sorted(name[5:-4] for name in run if name.startswith("gate_") and name.endswith("_low"))
    return ", ".join(f"{g} {run[f'gate_{g}_low']:.1%}/{run[f'gate_{g}_high']:.1%}" for g in gates)


def _bound(value: float | None) -> str:
    return "–" if value is None else f"{value:+.4f}"


def _describe(label: str) -> str:
    name, at, radius = label.partition("@")
    return registry.describe(name) + (f"; U orthogonal × {radius}" if at else "")


def _tables(config: Config, results: dict) -> dict[str, str]:
    """The markdown table of each part (part 5 has its heat map only)."""
    decay, adding, ablation = results, results["adding"], results["ablation"]
    lens = list(next(iter(adding.values())))
    explode_keys = {
        "final_loss": "final loss",
        "max_grad_norm": "max ‖g‖",
        "median_grad_norm": "median ‖g‖",
        "max_update_norm": "max ‖update‖",
        "final_radius": "final ρ(U)",
        "nonfinite_steps": "non-finite steps",
    }
    return {
        "decay": _table(
            ["cell", "decades/step (± std over seeds)", "bound log10 σ_max(U)"],
            [[c, f"{r:+.4f} ± {decay['decay_rate_per_step_std'][c]:.4f}",
              _bound(decay["decay_bound_per_step"].get(c))]
             for c, r in decay["decay_rate_per_step"].items()],
        ),
        "adding": _table(["cell"] + [f"T = {t}" for t in lens],
                         [[c] + [_solved(v[t]) for t in lens] for c, v in adding.items()]),
        "exploding": _table(["run", *explode_keys.values()],
                            [[name] + [_fmt(run[k]) for k in explode_keys]
                             for name, run in results["exploding"]["runs"].items()]),
        "ablation": _table(["cell", "what", "solved (mean MSE)", "gates: σ<0.05 / σ>0.95"],
                           [[c, _describe(c), _solved(r),
                             _saturation(r) or "–"] for c, r in ablation.items()]),
        "tracking": "",
    }  # fmt: skip


def write_report(config: Config, results: dict, out: Path) -> Path:
    """`out/report.md`: setup, seeds, runtime, and per part its finding, table and plot."""
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in results["part_seconds"].items())
    titles = {
        "decay": f"1. Gradient decay at initialisation (T = {config.decay_len})",
        "adding": "2. Learning vs sequence length (adding problem): seeds solved (mean MSE)",
        "exploding": f"3. Exploding regime (Elman-tanh, T = {config.explode_len}, "
        f"{config.explode_optimizer} lr {config.explode_learning_rate:g})",
        "ablation": f"4. Gate ablations (adding problem, T = {config.ablation_len})",
        "tracking": f"5. Gradient profile during training (T = {config.track_len})",
    }
    plots = dict(zip(titles, PLOTS))
    head = [
        "# Vanishing and exploding gradients",
        f"- **Setup**: the adding problem (baseline MSE 1/6, solved below {SOLVED_MSE}); RNN "
        f"width {config.hidden_size} + linear readout of the last state; {config.optimizer} lr "
        f"{config.learning_rate:g} ({config.schedule}), clip {config.grad_clip:g}, batch "
        f"{config.batch_size}, {config.steps} steps, {config.test_size} test sequences. "
        "`NAME@R`: every recurrent block U is orthogonal × R, so ρ(U) = σ_max(U) = R.",
        f"- **Seeds**: {config.num_seeds} per cell, trained at once with `jax.vmap`; seed k in "
        f"{results['seeds']} initialises from `fold_in(key({config.seed}), k)` for every cell.",
        f"- **Runtime**: {results['train_seconds']:.0f} s on {results['device']} "
        f"({results['cpu_count']} CPUs, load average {results['load_average'][0]:.1f} at the "
        f"start, {results['load_average'][1]:.1f} at the end); {seconds}.",
        f"- **Reproduce**: `python -m experiments.vanishing_gradients --config={out}/config.json`",
    ]
    tables = _tables(config, results)
    body = [
        f"## {titles[part]}\n\n**Finding.** {results['findings'][part]}\n\n"
        + (f"{tables[part]}\n\n" if tables[part] else "")
        + f"![{part}]({plots[part]})"
        for part in titles
    ]
    path = out / "report.md"
    path.write_text("\n".join(head) + "\n\n" + "\n\n".join(body) + "\n")
    return path


def findings(config: Config, parts: dict) -> dict[str, str]:
    """One sentence per part, computed from its numbers."""
    return {
        "decay": finding_decay(parts["decay"]),
        "adding": finding_adding(parts["adding"]),
        "exploding": finding_explode(parts["exploding"], config.explode_grad_clip),
        "ablation": finding_ablation(parts["ablation"], config.ablation_len),
        "tracking": finding_track(parts["tracking"], config.track_len),
    }


def run_parts(config: Config) -> tuple[dict, dict]:
    """Runs the five parts in order; returns `({part: output}, {part: seconds})`."""
    runs = {}  # (cell, T) -> adding run, shared by parts 2 and 4
    cells = parse_cells("cells", config.cells)
    lens = parse_numbers("seq_lens", config.seq_lens, int, 2)
    ablation_cells = parse_cells("ablation_cells", config.ablation_cells)

    def ablation() -> dict:
        table = part_adding(config, runs, ablation_cells, (config.ablation_len,))
        return {cell: by_len[str(config.ablation_len)] for cell, by_len in table.items()}

    parts = {
        "decay": lambda: part_decay(config),
        "adding": lambda: part_adding(config, runs, cells, lens),
        "exploding": lambda: part_explode(config),
        "ablation": ablation,
        "tracking": lambda: part_track(config),
    }
    outputs, seconds = {}, {}
    for name, run in parts.items():
        begin = time.perf_counter()
        outputs[name] = run()
        seconds[name] = time.perf_counter() - begin
    return outputs, seconds


def _by_len(table: dict, name: str) -> dict:
    return {cell: {t: run[name] for t, run in by_len.items()} for cell, by_len in table.items()}


def main(config: Config) -> dict:
    config = resolve(config)
    out = Path(config.out_dir)
    cli.save_config(config, out)
    start, load = time.perf_counter(), os.getloadavg()[0]
    parts, seconds = run_parts(config)
    adding = parts["adding"]
    results = {
        **parts["decay"],
        "solved_fraction": _by_len(adding, "solved_fraction"),  # the success table
        "test_mse": _by_len(adding, "test_mse"),
        **{name: parts[name] for name in ("adding", "ablation", "exploding", "tracking")},
        "findings": findings(config, parts),
        "baseline_mse": BASELINE_MSE,
        "solved_mse": SOLVED_MSE,
        "steps": config.steps,
        "num_seeds": config.num_seeds,
        "seeds": list(range(config.num_seeds)),
        "part_seconds": seconds,
        "train_seconds": time.perf_counter() - start,
        "load_average": [load, os.getloadavg()[0]],
        "cpu_count": os.cpu_count(),
        "device": jax.devices()[0].device_kind,
    }  # fmt: skip
    training.write_results(out, results)
    plot_decay(parts["decay"], out / "decay.png")
    plot_adding(adding, out / "adding.png")
    plot_explode(parts["exploding"], out / "exploding.png")
    plot_ablation(parts["ablation"], config.ablation_len, out / "ablations.png")
    plot_track(parts["tracking"], out / "tracking.png")
    write_report(config, results, out)
    for name, finding in results["findings"].items():
        print(f"{name}: {finding}")
    print(f"{results['train_seconds']:.0f} s; report in {out / 'report.md'}")
    return results


if __name__ == "__main__":
    config = cli.parse(Config)
    training.join_distributed(config)  # --distributed=True: before any other JAX call
    main(config)
