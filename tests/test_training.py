"""Training: optimizers against PyTorch, the step against NumPy, and the loop's contracts.

Toy tasks: a linear regression (closed-form gradients; most tests) and a tiny Elman
RNN (every parameter changes). Every `fit` runs a few dozen steps at most.
"""

import dataclasses
import json
import math
import os
import shutil
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxseq
from jaxseq import training
from jaxseq.training.guard import find_bad_step

W_TRUE = np.array([1.0, -2.0, 0.5], np.float32)
BATCH = 16


# --- linear regression: y = x·w + b (+ noise from the step key) -------------------------


def linear_params(seed=0):
    """Fixed initial parameters, different for each seed (NumPy: no compile)."""
    w = np.array([0.3, -0.2, 0.1], np.float32) * (1.0 + seed)
    return {"w": jnp.asarray(w), "b": jnp.asarray(np.float32(-0.1 * seed))}


def linear_batch(key, step):
    del step
    xs = 2.0 * jax.random.normal(key, (BATCH, 3))
    return xs, xs @ jnp.asarray(W_TRUE) + 0.5


def fixed_batch(step):
    """A deterministic NumPy batch for the direct train-step tests (nothing to compile)."""
    xs = 2.0 * np.sin(0.7 * np.arange(BATCH * 3, dtype=np.float32).reshape(BATCH, 3) + step)
    return xs.astype(np.float32), (xs @ W_TRUE + 5.0).astype(np.float32)  # ‖g‖ > 1 for long


noise = jax.jit(lambda key: 0.01 * jax.random.normal(key, (BATCH,)))  # as in `linear_loss`


def poisoned_batch(key, step):
    """NaN inputs at step index 13 (the 14th update)."""
    xs, ys = linear_batch(key, step)
    return jnp.where(step == 13, jnp.nan, xs), ys


def linear_loss(params, batch, key):
    xs, ys = batch
    err = xs @ params["w"] + params["b"] - (ys + noise(key))  # the step key matters
    return jnp.mean(err**2), {"mae": jnp.mean(jnp.abs(err))}


def grad_poisoned_loss(params, batch, key):
    """Finite loss, infinite gradient where flag = 1: d/db sqrt(|b - sg(b)|) at b - sg(b) = 0."""
    xs, ys, flag = batch
    gap = jnp.abs(params["b"] - jax.lax.stop_gradient(params["b"]))
    loss, aux = linear_loss(params, (xs, ys), key)
    return loss + jnp.sqrt(flag * gap + (1.0 - flag)) - 1.0, aux


OPTIMIZER = training.make_optimizer("adam", 0.05)
LINEAR_STEP = training.make_train_step(linear_loss, OPTIMIZER)


def eval_linear(params):
    return {"w_error": jnp.sqrt(jnp.sum((params["w"] - jnp.asarray(W_TRUE)) ** 2))}


def fit_linear(out_dir, steps, sample=linear_batch, train_step=LINEAR_STEP, **kwargs):
    state = training.init_state(linear_params(), OPTIMIZER)
    kwargs = {"key": jax.random.key(2), "log_every": 5, "checkpoint_every": 10, **kwargs}
    return training.fit(train_step, state, sample, steps=steps, out_dir=out_dir, **kwargs)


def read_metrics(out_dir):
    def no_nan(token):
        raise ValueError(f"non-strict JSON token {token}")

    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line, parse_constant=no_nan) for line in lines]


def without_timing(records):
    return [{k: v for k, v in r.items() if k != "ms_per_step"} for r in records]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """20 uninterrupted steps, checkpoints at 10 and 20, a record every 5 steps."""
    out = tmp_path_factory.mktemp("clean")
    state, history = fit_linear(out, 20)
    return out, state, history


# --- optimizers and the train step ------------------------------------------------------


def _torch_optimizer(name, params):
    if name == "adam":
        return torch.optim.Adam(params, lr=0.05)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=0.05, weight_decay=0.1)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=0.05, alpha=0.9, weight_decay=0.05)
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=0.1)


@pytest.mark.parametrize(
    "name, weight_decay", [("adam", 0.0), ("adamw", 0.1), ("rmsprop", 0.05), ("sgd", 0.1)]
)
def test_optimizer_matches_torch(name, weight_decay):
    """Clip (active: ‖g‖ ≫ 1) + optimizer + weight decay, 5 steps, against torch.optim."""
    optimizer = training.make_optimizer(name, 0.05, grad_clip=1.0, weight_decay=weight_decay)
    train_step = training.make_train_step(linear_loss, optimizer)
    params = linear_params()
    w = torch.tensor(np.asarray(params["w"]), requires_grad=True)
    b = torch.tensor(np.asarray(params["b"]), requires_grad=True)
    torch_opt = _torch_optimizer(name, [w, b])
    state = training.init_state(params, optimizer)
    key = jax.random.key(0)
    for step in range(5):
        xs, ys = fixed_batch(step)
        state, metrics = train_step(state, (xs, ys), key)
        torch_opt.zero_grad()
        target = torch.tensor(ys + np.asarray(noise(key)))
        loss = torch.mean((torch.tensor(xs) @ w + b - target) ** 2)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([w, b], 1.0)
        assert float(norm) > 1.0  # the clip is active
        torch_opt.step()
        np.testing.assert_allclose(float(metrics["grad_norm"]), float(norm), rtol=1e-5)
    # The steps are ~0.05; float32 rounding differs at ~1e-6.
    np.testing.assert_allclose(state.params["w"], w.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state.params["b"], b.detach().numpy(), rtol=1e-5, atol=1e-5)


def _expected_lr(schedule, step, peak=0.1, warmup=3, total=10):
    if step < warmup:
        return peak * step / warmup
    frac = min((step - warmup) / (total - warmup), 1.0)
    if schedule == "cosine":
        return peak * 0.5 * (1.0 + math.cos(math.pi * frac))
    return peak * (1.0 - frac) if schedule == "linear" else peak


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_schedule_follows_warmup_and_decay(schedule):
    """SGD on loss = w has update -lr_t: read the schedule off the parameter."""
    optimizer = training.make_optimizer(
        "sgd", 0.1, grad_clip=0.0, momentum=0.0, schedule=schedule, warmup_steps=3,
        total_steps=10,
    )  # fmt: skip
    train_step = training.make_train_step(lambda p, b, k: (jnp.sum(p), {}), optimizer)
    state = training.init_state(jnp.zeros((1,)), optimizer)
    lrs = []
    for _ in range(12):
        before = float(state.params[0])
        state, _ = train_step(state, None, jax.random.key(0))
        lrs.append(before - float(state.params[0]))
    expected = [_expected_lr(schedule, s) for s in range(12)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "adagrad"}, "name must be one of"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"grad_clip": -1.0}, "grad_clip must be >= 0"),
        ({"schedule": "cosine"}, "needs total_steps"),
        ({"schedule": "step"}, "schedule must be one of"),
        ({"schedule": "linear", "warmup_steps": 5, "total_steps": 5}, "total_steps must exceed"),
        ({"momentum": 1.0}, "momentum must lie in"),
    ],
)
def test_make_optimizer_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        training.make_optimizer(**kwargs)


def test_train_step_metrics_match_numpy_and_compile_once():
    """Plain SGD: θ' = θ − lr·∇L with ∇L of the MSE in closed form; one trace, 3 steps."""
    optimizer = training.make_optimizer("sgd", 0.1, grad_clip=0.0, momentum=0.0)
    loss_fn = chex.assert_max_traces(lambda p, b, k: linear_loss(p, b, k), n=1)
    train_step = training.make_train_step(loss_fn, optimizer)
    params = linear_params()
    state = training.init_state(params, optimizer)
    w, b = np.asarray(params["w"], np.float64), float(params["b"])
    for step in range(3):
        xs, ys = fixed_batch(step)
        key = jax.random.key(10 + step)
        target = np.asarray(ys + np.asarray(noise(key)), np.float64)
        state, metrics = train_step(state, (xs, ys), key)
        err = np.asarray(xs, np.float64) @ w + b - target
        grad_w, grad_b = 2 * np.asarray(xs, np.float64).T @ err / BATCH, 2 * err.mean()
        grad_norm = np.sqrt(np.sum(grad_w**2) + grad_b**2)
        w, b = w - 0.1 * grad_w, b - 0.1 * grad_b
        expected = {
            "loss": np.mean(err**2),
            "grad_norm": grad_norm,
            "update_norm": 0.1 * grad_norm,
            "param_norm": np.sqrt(np.sum(w**2) + b**2),
            "mae": np.mean(np.abs(err)),
        }
        chex.assert_trees_all_close(jax.device_get(metrics), expected, rtol=1e-5)
    np.testing.assert_allclose(state.params["w"], w, rtol=1e-5)
    assert int(state.step) == 3


def test_every_parameter_changes_after_one_step(key):
    """A tiny Elman RNN (H=4) with a linear read-out, one Adam step on an adding batch."""
    layer = jaxseq.rnn(jaxseq.elman(4))
    init = jax.jit(lambda k: {"rnn": layer.init(k, 2), "w": jnp.ones((4,)), "b": jnp.zeros(())})
    params = init(key)
    xs = np.stack([np.linspace(0, 1, 5 * 8).reshape(5, 8), np.eye(5, 8)], -1).astype(np.float32)
    batch = (jnp.asarray(xs), jnp.asarray(np.sum(xs[..., 0] * xs[..., 1], axis=0)))

    def loss_fn(p, batch, key):
        xs, ys = batch
        pred = layer.apply(p["rnn"], xs)[0][-1] @ p["w"] + p["b"]
        return jnp.mean((pred - ys) ** 2), {}

    optimizer = training.make_optimizer("adam", 1e-2)
    state = training.init_state(params, optimizer)
    new, _ = training.make_train_step(loss_fn, optimizer)(state, batch, key)
    changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                           params, new.params)  # fmt: skip
    assert len(jax.tree.leaves(changed)) == 5 and all(jax.tree.leaves(changed)), changed


def test_non_finite_gradient_leaves_the_state_unchanged(key):
    """Finite loss, Inf gradient: params, opt_state and step stay; the metric shows it."""
    train_step = training.make_train_step(grad_poisoned_loss, OPTIMIZER)
    state = training.init_state(linear_params(), OPTIMIZER)
    xs, ys = fixed_batch(0)
    state, _ = train_step(state, (xs, ys, jnp.zeros(())), key)
    before = jax.device_get(state)
    after, metrics = train_step(state, (xs, ys, jnp.ones(())), key)
    chex.assert_trees_all_equal(jax.device_get(after), before)
    assert int(after.step) == 1 and np.isfinite(metrics["loss"])
    assert not np.isfinite(metrics["grad_norm"])


def test_train_step_rejects_bad_loss_and_state():
    bad = training.make_train_step(lambda p, b, k: jnp.sum(p), OPTIMIZER)
    state = training.init_state(jnp.zeros((2,)), OPTIMIZER)
    with pytest.raises(TypeError, match=r"loss_fn must return \(loss, aux\)"):
        bad(state, None, jax.random.key(0))
    seeded = training.make_train_step(lambda p, b, k: (jnp.sum(p), {}), OPTIMIZER, num_seeds=3)
    with pytest.raises(ValueError, match=r"state.step must have shape \(3,\)"):
        seeded(state, None, jax.random.key(0))


# --- the loop -------------------------------------------------------------------------


def test_fit_reduces_loss_and_logs(tmp_path, capsys):
    """40 steps on the regression: records, log lines, evaluation, TensorBoard events."""
    initial = training.evaluate(eval_linear, linear_params())["w_error"]
    state, history = fit_linear(
        tmp_path, 40, log_every=10, eval_fn=eval_linear, eval_every=20, checkpoint_every=0,
        tensorboard=True,
    )  # fmt: skip
    assert history[-1]["loss"] < 0.1 * history[0]["loss"]
    assert history[-1]["eval_w_error"] < 0.5 * initial, (initial, history[-1])
    final = training.evaluate(eval_linear, state.params)["w_error"]
    assert history[-1]["eval_w_error"] == pytest.approx(final)
    assert read_metrics(tmp_path) == history
    assert [r["step"] for r in history] == [10, 20, 30, 40]
    assert [("eval_w_error" in r) for r in history] == [False, True, False, True]
    assert list(history[0]) == ["step", "loss", "grad_norm", "param_norm", "update_norm", "mae",
                                "ms_per_step"]  # fmt: skip
    lines = capsys.readouterr().out.splitlines()  # one line per record, no progress bar
    assert len(lines) == 4 and lines[0].startswith("step 10: loss ") and "ms/step" in lines[0]
    assert not (tmp_path / "checkpoints").exists()
    scalars = _read_tensorboard(tmp_path)
    assert scalars["loss"] == [(r["step"], pytest.approx(r["loss"])) for r in history]


def _read_tensorboard(out_dir):
    """Parses the TFRecord event files with tensorboardX's protobufs: {tag: [(step, v)]}."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    for name in sorted(os.listdir(out_dir)):
        if not name.startswith("events.out.tfevents"):
            continue
        data = (out_dir / name).read_bytes()
        pos = 0
        while pos < len(data):
            length = int.from_bytes(data[pos : pos + 8], "little")
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 16 + length
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_resume_equals_uninterrupted_run(clean_run, tmp_path):
    """Killed during the save of step 15: resume restores 10 and matches 20 clean steps."""
    clean_dir, clean_state, clean_history = clean_run
    fit_linear(tmp_path, 15)
    ckpt = tmp_path / "checkpoints"
    assert sorted(os.listdir(ckpt)) == ["10", "15"]
    # Simulate a kill mid-save: step 15 exists only as Orbax's partial temporary directory,
    # and metrics.jsonl holds records past the last checkpoint plus a torn line.
    os.rename(ckpt / "15", ckpt / "15.orbax-checkpoint-tmp-1234567")
    shutil.rmtree(ckpt / "15.orbax-checkpoint-tmp-1234567" / "default")
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 16, "lo')
    state, history = fit_linear(tmp_path, 20, resume=True)
    chex.assert_trees_all_equal(state, clean_state)
    assert without_timing(history) == without_timing(clean_history)
    assert without_timing(read_metrics(tmp_path)) == without_timing(read_metrics(clean_dir))
    assert sorted(os.listdir(ckpt)) == ["10", "20"]


def test_resume_of_a_finished_run_changes_nothing(clean_run, tmp_path):
    clean_dir, clean_state, clean_history = clean_run
    shutil.copytree(clean_dir, tmp_path, dirs_exist_ok=True)
    state, history = fit_linear(tmp_path, 20, resume=True)
    chex.assert_trees_all_equal(state, clean_state)
    assert history == clean_history


def test_nan_guard_stops_and_keeps_last_good_checkpoint(clean_run, tmp_path):
    """NaN inputs at the 14th update; syncs every 5 steps, checkpoints every 10."""
    with pytest.raises(training.NonFiniteError, match="non-finite loss .* at step 14") as info:
        fit_linear(tmp_path, 20, sample=poisoned_batch)
    error = info.value
    assert isinstance(error, FloatingPointError)
    assert (error.step, error.metric, error.seed) == (14, "loss", None)
    assert math.isnan(error.value)
    assert error.checkpoint == str(tmp_path.absolute() / "checkpoints" / "10")
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10"]
    assert [r["step"] for r in read_metrics(tmp_path)] == [5, 10]
    like = training.init_state(linear_params(), OPTIMIZER)
    kept = training.load_checkpoint(tmp_path, like)
    chex.assert_trees_all_equal(kept, training.load_checkpoint(clean_run[0], like, step=10))


def test_nan_guard_names_the_seed(tmp_path):
    """Only seed 1 (tagged by a parameter no gradient reaches) turns NaN at update 14."""

    def loss_fn(params, batch, key):
        xs, ys, flag = batch
        loss, aux = linear_loss(params, (xs, ys), key)
        poison = jnp.where(flag * jax.lax.stop_gradient(params["tag"]) > 0.5, jnp.nan, 0.0)
        return loss + poison, aux

    def sample(key, step):
        return (*linear_batch(key, step), (step == 13).astype(jnp.float32))

    params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros((2,)), "tag": jnp.array([0.0, 1.0])}
    with pytest.raises(training.NonFiniteError, match="at step 14 for seed 1") as info:
        training.fit(
            training.make_train_step(loss_fn, OPTIMIZER, num_seeds=2),
            training.init_state(params, OPTIMIZER, num_seeds=2),
            sample, key=jax.random.split(jax.random.key(0), 2), steps=15, out_dir=tmp_path,
            log_every=15, num_seeds=2,
        )  # fmt: skip
    assert (info.value.step, info.value.metric, info.value.seed) == (14, "loss", 1)
    assert info.value.checkpoint is None
    assert read_metrics(tmp_path) == []


def test_find_bad_step_names_the_first_seed_and_metric():
    nan = float("nan")
    metrics = {"loss": np.array([0.1, 0.2, 0.3]), "grad_norm": np.array([1.0, nan, np.inf])}
    metrics["param_norm"] = np.array([1.0, 2.0, 3.0])
    assert find_bad_step(20, np.array([20, 20, 20]), metrics) is None
    assert find_bad_step(20, np.array([20, 17, 13]), metrics) == (14, "grad_norm", np.inf, 2)
    assert find_bad_step(20, np.array(13), {k: v[1] for k, v in metrics.items()})[:2] == (
        14, "grad_norm",
    )  # fmt: skip
    metrics["param_norm"] = np.array([1.0, np.inf, nan])  # finite gradients, bad update
    assert find_bad_step(20, np.array([20, 20, 20]), metrics) == (20, "param_norm", np.inf, 1)
    error = training.NonFiniteError(20, "param_norm", np.inf, seed=1)
    assert "at step 20 for seed 1: an update from finite gradients" in str(error)


def test_many_seeds_equal_separate_runs(tmp_path):
    """K=2 vmapped models (one compile) equal two separate runs with the same keys."""
    num_seeds = 2
    run_keys = jax.random.split(jax.random.key(6), num_seeds)
    params = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), linear_params(0), linear_params(1))
    loss_fn = chex.assert_max_traces(lambda p, b, k: linear_loss(p, b, k), n=1)
    state, history = training.fit(
        training.make_train_step(loss_fn, OPTIMIZER, num_seeds=num_seeds),
        training.init_state(params, OPTIMIZER, num_seeds=num_seeds),
        linear_batch, key=run_keys, steps=10, out_dir=tmp_path / "k", log_every=5,
        eval_fn=eval_linear, checkpoint_every=10, num_seeds=num_seeds,
    )  # fmt: skip
    like = training.init_state(params, OPTIMIZER, num_seeds=num_seeds)
    chex.assert_trees_all_equal(training.load_checkpoint(tmp_path / "k", like), state)
    evals = training.evaluate(eval_linear, state.params, num_seeds=num_seeds)
    for seed in range(num_seeds):
        single, single_history = training.fit(
            LINEAR_STEP, training.init_state(linear_params(seed), OPTIMIZER),
            linear_batch, key=run_keys[seed], steps=10, out_dir=tmp_path / str(seed),
            log_every=5, eval_fn=eval_linear,
        )  # fmt: skip
        mine = jax.tree.map(lambda x: np.asarray(x)[seed], state)
        chex.assert_trees_all_close(mine, jax.device_get(single), rtol=1e-5)
        for record, single_record in zip(history, single_history, strict=True):
            for name in ("loss", "grad_norm", "mae"):
                assert record[name + "_per_seed"][seed] == pytest.approx(single_record[name])
        assert evals["w_error"][seed] == pytest.approx(single_history[-1]["eval_w_error"])
    assert history[-1]["loss"] == pytest.approx(np.mean(history[-1]["loss_per_seed"]))


def test_seed_summary_and_write_results(tmp_path):
    values = np.array([0.5, 0.7, 0.9])
    summary = training.seed_summary(values)
    assert summary == {"mean": pytest.approx(0.7), "std": pytest.approx(0.2),
                       "per_seed": [0.5, 0.7, 0.9]}  # fmt: skip
    assert training.seed_summary(0.3) == {"mean": 0.3, "std": 0.0, "per_seed": [0.3]}
    results = {"acc": summary, "nan": jnp.float32(jnp.nan), "arr": jnp.arange(2), "ok": True}
    path = training.write_results(tmp_path, results)
    assert path == tmp_path / "results.json"
    assert json.loads(path.read_text()) == {
        "acc": {"mean": pytest.approx(0.7), "std": pytest.approx(0.2), "per_seed": [0.5, 0.7, 0.9]},
        "nan": None, "arr": [0, 1], "ok": True,
    }  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"steps": 0}, ValueError, "steps must be a positive int"),
        ({"log_every": 0}, ValueError, "log_every must be a positive int"),
        ({"checkpoint_every": -1}, ValueError, "checkpoint_every must be an int >= 0"),
        ({"num_seeds": 2}, ValueError, r"state.step must have shape \(2,\)"),
        ({"key": jax.random.split(jax.random.key(0), 2)}, ValueError, r"key must have shape \(\)"),
        ({"key": 3}, TypeError, "key must be a jax PRNG key"),
        ({"eval_fn": 3}, TypeError, "eval_fn must be callable"),
    ],
)
def test_fit_rejects_bad_input(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        fit_linear(tmp_path, **{"steps": 5, **kwargs})


def test_tensorboard_without_tensorboardx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ImportError, match=r"pip install 'jaxseq\[tensorboard\]'"):
        fit_linear(tmp_path, 5, tensorboard=True)


def test_fit_passes_data_as_an_argument(tmp_path):
    """`data=` reaches `sample_batch` as a traced argument, not a compiled-in constant."""
    seen = []

    def sample_batch(key, step, table):
        seen.append(isinstance(table, jax.core.Tracer))
        return table[step % 4]

    def loss_fn(params, batch, key):
        return jnp.sum((params - batch) ** 2), {}

    optimizer = training.make_optimizer("sgd", 0.1, grad_clip=0.0, momentum=0.0)
    state = training.init_state(jnp.zeros(()), optimizer)
    table = jnp.arange(4.0)
    state, _ = training.fit(
        training.make_train_step(loss_fn, optimizer), state, sample_batch,
        key=jax.random.key(0), steps=4, out_dir=tmp_path, log_every=4, data=table,
    )  # fmt: skip
    expected = 0.0
    for target in (0.0, 1.0, 2.0, 3.0):  # plain gradient descent, lr 0.1, by hand
        expected -= 0.1 * 2 * (expected - target)
    assert seen and all(seen)
    assert float(state.params) == pytest.approx(expected, rel=1e-6)


def test_only_process_zero_writes_run_files(tmp_path, monkeypatch):
    """In a multi-host run the other processes train and return the same, but write nothing."""
    from jaxseq import cli

    monkeypatch.setattr(jax, "process_index", lambda: 1)
    _, history = fit_linear(tmp_path, 10, checkpoint_every=0, tensorboard=True)
    assert [r["step"] for r in history] == [5, 10]
    training.write_results(tmp_path, {"loss": history[-1]["loss"]})
    cli.save_config(Config(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no metrics, events, results


@dataclasses.dataclass(frozen=True)
class Config:
    steps: int = 1
