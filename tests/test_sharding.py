"""Sharded training: 8 CPU devices (a subprocess) against 1 device, accumulation, checkpoints.

The subprocess runs `eight_device_run` with `--xla_force_host_platform_device_count=8`
and writes its parameters and metrics to an .npz; this process (1 device) trains the
same model on the same global batches and compares. Parameters are drawn with NumPy
(no compile); each model is tiny (T=5, B=16, H=4). A second subprocess runs experiment
scripts' `main` with their batches split over the 8 devices (`--mesh_data=0`) against
the same runs here on one device (`--mesh_data=1`).
"""

import dataclasses
import importlib
import inspect
import json
import os
import socket
import subprocess
import sys
import types
from functools import partial
from pathlib import Path

import jax
import jax.experimental.multihost_utils
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

import jaxseq
from jaxseq import cli, models, sharding, training
from jaxseq.training import checkpoint, classify

T, B, F, H, C = 5, 16, 3, 4, 2
DEVICES = 8
CELLS = ("lstm", "gru")
ADAM = training.make_optimizer("adam", 0.01)
SGD = training.make_optimizer("sgd", 0.5, grad_clip=0.0)  # plain θ − 0.5 g on step 1
AXES = (1, 0)  # xs [T, B, F]: batch at axis 1; labels [B]: axis 0


def build(cell_name: str):
    """`(loss_fn, params)`: a classifier on `cell_name`, parameters from NumPy."""
    cell = {"lstm": jaxseq.lstm, "gru": jaxseq.gru}[cell_name](H)
    model = models.classifier(jaxseq.rnn(cell), C)

    def loss_fn(params, batch, key):
        xs, labels = batch
        return models.cross_entropy(model.apply(params, xs), labels), {}

    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(partial(model.init, jax.random.key(0), input_size=F))
    params = jax.tree.map(lambda s: (0.5 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
    return loss_fn, params


def batches(n: int) -> list:
    """`n` fixed NumPy batches `(xs [T, B, F], labels [B])`."""
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((n, T, B, F)).astype(np.float32)
    labels = rng.integers(0, C, (n, B)).astype(np.int32)
    return [(xs[i], labels[i]) for i in range(n)]


def sample_batch(key, step):
    """For `fit`: a batch drawn inside the jitted step."""
    del step
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (T, B, F)), jax.random.randint(ky, (B,), 0, C)


def run_steps(train_step, state, batch_list, place=lambda batch: batch):
    """Applies `train_step` to each batch; returns the state and the stacked losses/norms."""
    seen = []
    for i, batch in enumerate(batch_list):
        state, metrics = train_step(state, place(batch), jax.random.key(i))
        seen.append([metrics["loss"], metrics["grad_norm"]])
    return state, np.asarray(seen)


def flat(prefix: str, tree) -> dict:
    return {f"{prefix}/{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(tree))}


def fit_lstm(out_dir, batch_sharding=None, state=None):
    loss_fn, params = build("lstm")
    step = training.make_train_step(loss_fn, ADAM)
    state = training.init_state(params, ADAM) if state is None else state
    state, _ = training.fit(step, state, sample_batch, key=jax.random.key(3), steps=2,
                            out_dir=out_dir, log_every=2, checkpoint_every=2,
                            batch_sharding=batch_sharding)  # fmt: skip
    return state


def eight_device_run(out: str) -> None:
    """Runs in the 8-device subprocess; writes `out/eight.npz` and `out/eight.json`."""
    jax.config.update("jax_numpy_rank_promotion", "raise")
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    assert jax.device_count() == DEVICES, jax.devices()
    mesh = sharding.make_mesh()
    place = partial(sharding.shard_batch, mesh=mesh, axes=AXES)
    arrays, info = {}, {}
    for name in CELLS:
        loss_fn, params = build(name)
        step = training.make_train_step(loss_fn, ADAM)
        state = sharding.replicate(training.init_state(params, ADAM), mesh)
        state, seen = run_steps(step, state, batches(2), place)
        arrays |= flat(f"{name}_dp", state.params) | {f"{name}_dp_metrics": seen}
    _, params = build("lstm")
    like = sharding.shard_params(training.init_state(params, ADAM), mesh)
    info["fsdp_specs"] = [str(x.sharding.spec) for x in jax.tree.leaves(like.params)]
    restored = checkpoint.load_checkpoint(Path(out) / "one", like)  # saved on 1 device
    info["restored_specs"] = [str(x.sharding.spec) for x in jax.tree.leaves(restored.params)]
    arrays |= flat("restored", restored.params)
    shard = place(batches(1)[0])
    info["shard_shapes"] = [list(x.addressable_shards[0].data.shape) for x in shard]
    try:
        sharding.shard_batch((np.zeros((T, 12, F)), np.zeros(12)), mesh, AXES)
    except ValueError as error:
        info["indivisible_error"] = str(error)
    data_sharding = sharding.batch_sharding(
        mesh, jax.eval_shape(sample_batch, jax.random.key(0), 0), AXES
    )
    info["mesh_sharding"] = mesh_sharding_answers()
    state = fit_lstm(Path(out) / "fit", data_sharding, restored)  # FSDP-sharded state
    info["fit_specs"] = [str(x.sharding.spec) for x in jax.tree.leaves(state.params)]
    arrays |= flat("fit", state.params)
    np.savez(Path(out) / "eight.npz", **arrays)
    (Path(out) / "eight.json").write_text(json.dumps(info))


def two_process_run(out: str) -> None:
    """Runs in each of 2 processes (1 CPU device each); writes `out/process<i>.npz`."""
    jax.config.update("jax_numpy_rank_promotion", "raise")
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    assert sharding.initialize() is True  # from JAX_COORDINATOR_ADDRESS etc.
    assert (jax.process_count(), jax.device_count()) == (2, 2)
    mesh = sharding.make_mesh()
    rows = sharding.process_shard(B, mesh)
    assert rows == slice(8 * jax.process_index(), 8 * jax.process_index() + 8), rows

    def place(batch):  # this process reads only its rows
        local = (batch[0][:, rows], batch[1][rows])
        return sharding.global_batch(local, mesh, AXES)

    loss_fn, params = build("lstm")
    step = training.make_train_step(loss_fn, ADAM)
    state = sharding.replicate(training.init_state(params, ADAM), mesh)
    state, seen = run_steps(step, state, batches(2), place)
    arrays = flat("lstm_dp", state.params) | {"lstm_dp_metrics": seen}
    data_sharding = sharding.batch_sharding(
        mesh, jax.eval_shape(sample_batch, jax.random.key(0), 0), AXES
    )
    like = sharding.shard_params(training.init_state(params, ADAM), mesh)
    state = fit_lstm(Path(out) / "fit", data_sharding, like)
    gathered = jax.experimental.multihost_utils.process_allgather(state.params, tiled=True)
    arrays |= flat("fit", gathered)
    np.savez(Path(out) / f"process{jax.process_index()}.npz", **arrays)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return {**env, "JAX_PLATFORMS": "cpu", **extra}


def _spawn_eight_devices(entry: str, out: Path) -> subprocess.Popen:
    """Starts `test_sharding.<entry>(out)` in a child process that sees 8 CPU devices."""
    paths = [str(Path(__file__).parents[1]), str(Path(__file__).parent)]
    code = f"import sys; sys.path[:0] = {paths!r}\nimport test_sharding\n"
    code += f"test_sharding.{entry}({str(out)!r})\n"
    env = _env(XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}")
    return subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Starts `eight_device_run`, trains the same models here on 1 device meanwhile.

    Returns `(arrays, info, out)` from the subprocess and `{name: (params, metrics)}`
    (and `"fit"`: the 1-device `fit` parameters) from this process.
    """
    out = tmp_path_factory.mktemp("eight")
    _, params = build("lstm")
    manager = checkpoint.open_manager(out / "one")
    checkpoint.save(manager, 0, training.init_state(params, ADAM))
    manager.close()
    with _spawn_eight_devices("eight_device_run", out) as child:
        single = {}
        for name in CELLS:
            loss_fn, params = build(name)
            step = training.make_train_step(loss_fn, ADAM)
            state, seen = run_steps(step, training.init_state(params, ADAM), batches(2))
            single[name] = (state.params, seen)
        single["fit"] = fit_lstm(out / "fit_one").params
        _, stderr = child.communicate(timeout=300)
    assert child.returncode == 0, stderr[-3000:]
    info = json.loads((out / "eight.json").read_text())
    return (dict(np.load(out / "eight.npz")), info, out), single


@pytest.fixture(scope="module")
def eight(runs):
    return runs[0]


@pytest.fixture(scope="module")
def single(runs):
    return runs[1]


def assert_leaves_close(arrays: dict, prefix: str, tree, atol=1e-6):
    leaves = jax.tree.leaves(tree)
    assert len(leaves) == sum(k.startswith(prefix + "/") for k in arrays)
    for i, leaf in enumerate(leaves):
        np.testing.assert_allclose(arrays[f"{prefix}/{i}"], leaf, atol=atol, rtol=0)


@pytest.mark.parametrize("name", CELLS)
def test_data_parallel_step_equals_one_device(eight, single, name):
    arrays, info, _ = eight
    params, seen = single[name]
    assert info["shard_shapes"] == [[T, B // DEVICES, F], [B // DEVICES]]
    np.testing.assert_allclose(arrays[f"{name}_dp_metrics"], seen, atol=1e-6, rtol=0)
    assert_leaves_close(arrays, f"{name}_dp", params)


def test_indivisible_batch_names_the_leaf(eight):
    message = eight[1]["indivisible_error"]
    assert "batch[0]" in message and "12" in message and "8" in message


def test_checkpoints_move_between_1_and_8_devices(eight):
    arrays, info, out = eight
    _, params = build("lstm")
    assert "P(None, 'data')" in info["restored_specs"]
    assert info["restored_specs"] == info["fsdp_specs"]  # 1 -> 8: restored sharded
    assert_leaves_close(arrays, "restored", params, atol=0)
    like = training.init_state(params, ADAM)
    restored = training.load_checkpoint(out / "fit", like)  # 8 -> 1
    assert int(restored.step) == 2
    assert_leaves_close(arrays, "fit", restored.params, atol=0)
    assert all(len(x.devices()) == 1 for x in jax.tree.leaves(restored))


def test_fsdp_fit_with_batch_sharding_equals_one_device(eight, single):
    """`fit` from an FSDP-sharded state, batches drawn in the step and sharded."""
    arrays, info, _ = eight
    assert "P(None, 'data')" in info["fsdp_specs"]  # w_h [H, 4H] is split
    assert "P()" in info["fsdp_specs"]  # the [C] readout bias is not
    assert info["fit_specs"] == info["fsdp_specs"]  # the step keeps the placement
    assert_leaves_close(arrays, "fit", single["fit"])


# --- one device: gradient accumulation, placement rules, argument checks ---------------


def accumulation_loss(params, batch, key):
    """Least squares on the time-summed inputs: `pred_b = (Σ_t x_tb)·w + c` (mean over b)."""
    del key
    xs, labels = batch
    err = jnp.sum(xs, axis=0) @ params["w"] + params["c"] - labels.astype(jnp.float32)
    return jnp.mean(err**2), {"mae": jnp.mean(jnp.abs(err))}


LINEAR = {"w": np.array([0.3, -0.2, 0.1], np.float32), "c": np.float32(0.2)}


def test_accumulating_4_micro_batches_equals_the_full_batch():
    """One SGD step with accumulate=4 against the closed-form full-batch gradient (NumPy)."""
    micro = training.make_train_step(accumulation_loss, SGD, accumulate=4, batch_axes=AXES)
    xs, labels = batches(1)[0]
    state, metrics = micro(training.init_state(LINEAR, SGD), (xs, labels), jax.random.key(0))
    err = xs.sum(0).astype(np.float64) @ LINEAR["w"] + LINEAR["c"] - labels
    grad_w, grad_c = 2 * xs.sum(0).T @ err / B, 2 * err.mean()
    np.testing.assert_allclose(metrics["loss"], np.mean(err**2), rtol=1e-6)
    np.testing.assert_allclose(metrics["mae"], np.mean(np.abs(err)), rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], np.hypot(np.linalg.norm(grad_w), grad_c),
                               rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(state.params["w"], LINEAR["w"] - 0.5 * grad_w, atol=1e-6, rtol=0)
    np.testing.assert_allclose(state.params["c"], LINEAR["c"] - 0.5 * grad_c, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"accumulate": 3, "batch_axes": AXES}, r"batch\[0\] has batch size 16.*accumulate=3"),
        ({"accumulate": 2, "batch_axes": (1, 0, 0)}, "axes must be an int or a pytree prefix"),
        ({"accumulate": 2, "batch_axes": 3}, r"batch\[0\] has shape \(5, 16, 3\), no batch axis 3"),
    ],
)
def test_accumulation_rejects_bad_splits(kwargs, match):
    step = training.make_train_step(accumulation_loss, SGD, **kwargs)
    with pytest.raises(ValueError, match=match):
        step(training.init_state(LINEAR, SGD), batches(1)[0], jax.random.key(0))


def test_accumulate_must_be_positive():
    with pytest.raises(ValueError, match="accumulate must be a positive int, got 0"):
        training.make_train_step(accumulation_loss, SGD, accumulate=0)


@pytest.mark.parametrize(
    ("shape", "spec"),
    [
        ((4, 16), PartitionSpec(None, "data")),
        ((16, 16), PartitionSpec("data", None)),  # ties: the first
        ((24, 3), PartitionSpec("data", None)),
        ((4,), PartitionSpec()),
        ((), PartitionSpec()),
    ],
)
def test_param_spec_splits_the_largest_divisible_dim(shape, spec):
    assert sharding.param_spec(shape, 8, "data") == spec


def test_one_device_mesh_and_process_shard():
    mesh = sharding.make_mesh()
    assert dict(mesh.shape) == {"data": 1, "model": 1}
    assert sharding.process_shard(16, mesh) == slice(0, 16)
    with pytest.raises(ValueError, match="data \\* model must equal the number of devices 1"):
        sharding.make_mesh(data=2)
    with pytest.raises(ValueError, match="model must be a positive int"):
        sharding.make_mesh(model=0)


def test_initialize_reads_the_environment(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert sharding.initialize() is False  # single process: nothing to start
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="num_processes=2 needs a coordinator_address"):
        sharding.initialize()
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
    with pytest.raises(ValueError, match="process_id=None"):
        sharding.initialize()
    monkeypatch.setenv("JAX_PROCESS_ID", "x")
    with pytest.raises(ValueError, match="JAX_PROCESS_ID must be an int, got 'x'"):
        sharding.initialize()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_agree_with_one_device(single, tmp_path):
    """`jax.distributed` on localhost: 2 processes, each feeding half of every batch."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        f"import test_sharding; test_sharding.two_process_run({str(tmp_path)!r})\n"
    )
    address = f"127.0.0.1:{_free_port()}"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=_env(JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)),
        )  # fmt: skip
        for i in range(2)
    ]
    errors = [child.communicate(timeout=300)[1] for child in children]
    for child, stderr in zip(children, errors):
        assert child.returncode == 0, stderr[-3000:]
    results = [dict(np.load(tmp_path / f"process{i}.npz")) for i in range(2)]
    params, seen = single["lstm"]
    for arrays in results:
        np.testing.assert_allclose(arrays["lstm_dp_metrics"], seen, atol=1e-6, rtol=0)
        assert_leaves_close(arrays, "lstm_dp", params)
        assert_leaves_close(arrays, "fit", single["fit"])
    restored = training.load_checkpoint(tmp_path / "fit", training.init_state(params, ADAM))
    assert_leaves_close(results[0], "fit", restored.params, atol=0)


# --- the experiments' mesh flags: --mesh_data, --distributed ---------------------------

EXPERIMENTS = (
    "adding",
    "autoencoder",
    "char_lm",
    "copy_memory",
    "digits",
    "forecast",
    "seq2seq",
    "vanishing_gradients",
    "vowels",
)
MESH_B = 16  # batch size of the sharded experiment runs: 2 rows per device
MESH_RUNS = {  # experiment -> (tiny config fields, the batch axis of each batch leaf)
    "adding": (
        dict(hidden_size=4, seq_len=5, test_size=16, num_seeds=2),  # vmapped seeds too
        [1, 0],  # xs [T, B, 2], targets [B]
    ),
    "digits": (dict(hidden_size=4), [1, 0, 0]),  # Batch(xs [T, B, 8], lengths [B], ys [B])
}
TIMING = ("train_seconds", "ms_per_step")


def mesh_config(name: str, out_dir, mesh_data: int):
    module = importlib.import_module(f"experiments.{name}")
    fields, _ = MESH_RUNS[name]
    config = module.Config(steps=3, log_every=3, batch_size=MESH_B, **fields)
    return module, dataclasses.replace(config, out_dir=str(out_dir), mesh_data=mesh_data)


def mesh_experiments_run(out: str) -> None:
    """In the 8-device subprocess: each of MESH_RUNS's `main` with mesh_data=0 (all 8).

    Records the batch sharding that `main` hands to `train_seeds` (leaf shapes, the
    sharded axis, mesh size) and the results in `out/mesh.json`.
    """
    jax.config.update("jax_numpy_rank_promotion", "raise")
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    assert jax.device_count() == DEVICES, jax.devices()
    seen, real = {}, training.train_seeds

    def recording(config, init, loss_fn, sample_batch, eval_fn=None, **kwargs):
        shapes = jax.eval_shape(sample_batch, jax.random.key(0), 0)
        placed = jax.tree.leaves(kwargs["batch_sharding"])
        seen[config.out_dir] = [
            [list(s.shape), list(p.spec).index(sharding.DATA), p.mesh.devices.size]
            for s, p in zip(jax.tree.leaves(shapes), placed, strict=True)
        ]
        return real(config, init, loss_fn, sample_batch, eval_fn, **kwargs)

    # what every experiment's `main` calls, directly or through `train_classifier`
    training.train_seeds = classify.train_seeds = recording
    info = {"results": {}, "placed": {}}
    for name in MESH_RUNS:
        module, config = mesh_config(name, Path(out) / name, 0)
        info["results"][name] = training.json_safe(module.main(config))
        info["placed"][name] = seen[config.out_dir]
    training.train_seeds = classify.train_seeds = real
    (Path(out) / "mesh.json").write_text(json.dumps(info))


def mesh_sharding_answers() -> dict:
    """In the 8-device subprocess: `mesh_sharding`'s mesh size (or error) per mesh_data."""
    answers = {}
    for mesh_data, batch in ((1, MESH_B), (2, MESH_B), (9, MESH_B), (0, 12)):
        config = types.SimpleNamespace(mesh_data=mesh_data, batch_size=batch)
        try:
            placed = training.mesh_sharding(config, lambda k, s, b=batch: jnp.zeros((5, b, 2)), 1)
            answers[f"{mesh_data}/{batch}"] = placed and placed.mesh.devices.size
        except ValueError as error:
            answers[f"{mesh_data}/{batch}"] = str(error)
    return answers


@pytest.fixture(scope="module")
def mesh_runs(tmp_path_factory):
    """`mesh_experiments_run` on 8 devices; meanwhile the same runs here with mesh_data=1."""
    out = tmp_path_factory.mktemp("mesh")
    with _spawn_eight_devices("mesh_experiments_run", out) as child:
        single = {}
        for name in MESH_RUNS:
            module, config = mesh_config(name, out / f"{name}_one", 1)
            single[name] = training.json_safe(module.main(config))
        _, stderr = child.communicate(timeout=300)
    assert child.returncode == 0, stderr[-3000:]
    return json.loads((out / "mesh.json").read_text()), single


@pytest.mark.slow  # 4 experiment runs, each compiling ~4 programs: ~1 min on 2 shared cores
@pytest.mark.parametrize("name", list(MESH_RUNS))
def test_experiment_on_8_devices_matches_mesh_data_1(mesh_runs, name):
    """`main` with the batch split over 8 devices reports what one device reports."""
    eight, single = mesh_runs
    _, axes = MESH_RUNS[name]
    placed = eight["placed"][name]
    assert [axis for _, axis, _ in placed] == axes  # "data" on each leaf's batch axis
    assert all(shape[axis] == MESH_B and size == DEVICES for shape, axis, size in placed)
    sharded = eight["results"][name]
    assert set(sharded) == set(single[name])
    numbers = [k for k, v in single[name].items() if k not in TIMING and not isinstance(v, str)]
    assert "final_train_loss" in numbers and len(numbers) > 3
    for key in numbers:
        np.testing.assert_allclose(sharded[key], single[name][key], atol=1e-5, rtol=0, err_msg=key)


def test_mesh_sharding_follows_mesh_data(eight):
    answers = eight[1]["mesh_sharding"]  # mesh_data/batch_size -> mesh size or error
    assert answers[f"1/{MESH_B}"] is None  # one device: no mesh, no constraint
    assert answers[f"2/{MESH_B}"] == 2  # the first 2 of the 8 devices
    assert "mesh_data must be <= the number of devices (8), got 9" in answers[f"9/{MESH_B}"]
    message = answers["0/12"]
    assert "mesh_data=0 (8 devices)" in message and "batch_size=12" in message
    assert "batch size 12" in message and "--mesh_data=1" in message


@pytest.mark.parametrize("value", [-1, True, 1.5])
def test_check_config_rejects_a_bad_mesh_data(value):
    config = dataclasses.replace(mesh_config("adding", "unused", 0)[1], mesh_data=value)
    with pytest.raises(ValueError, match=r"mesh_data must be an int >= 0 \(0: all devices\), got"):
        training.check_config(config)


def test_mesh_sharding_on_one_device():
    _, config = mesh_config("adding", "unused", 0)
    xs_only = lambda key, step: jnp.zeros((5, MESH_B, 2))  # noqa: E731
    assert training.mesh_sharding(config, xs_only, 1) is None  # all devices: 1
    assert training.mesh_sharding(dataclasses.replace(config, mesh_data=1), xs_only, 1) is None
    with pytest.raises(
        ValueError, match=r"mesh_data must be <= the number of devices \(1\), got 2"
    ):
        training.mesh_sharding(dataclasses.replace(config, mesh_data=2), xs_only, 1)


@pytest.mark.parametrize(("distributed", "answers", "calls"),
                         [(False, [], []), (True, [True], [False]),
                          (True, [False, True], [False, True])])  # fmt: skip
def test_join_distributed(monkeypatch, distributed, answers, calls):
    """`--distributed=True`: the environment's coordinator, else JAX's auto-detection."""
    seen, answers = [], list(answers)

    def initialize(*, auto=False):
        seen.append(auto)
        return answers.pop(0)

    monkeypatch.setattr(sharding, "initialize", initialize)
    config = dataclasses.replace(mesh_config("adding", "unused", 0)[1], distributed=distributed)
    assert training.join_distributed(config) is bool(calls)
    assert seen == calls


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_takes_the_mesh_flags(name):
    module = importlib.import_module(f"experiments.{name}")
    assert (module.Config().mesh_data, module.Config().distributed) == (0, False)
    config = cli.parse(module.Config, ["--mesh_data=2", "--distributed=True"])
    assert (config.mesh_data, config.distributed) == (2, True)
    source = inspect.getsource(module)
    assert "training.join_distributed(config)" in source.split('if __name__ == "__main__":')[1]
    # its batches are placed on the mesh: by `mesh_sharding`, or by `train_classifier`,
    # which does it (the 8-device run above checks the placement itself)
    assert "training.mesh_sharding(config, " in source or "training.train_classifier(" in source
