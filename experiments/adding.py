"""The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015): the main job.

Each sequence has two channels: values from U(0, 1), and a marker that is 1 at
one step in the first half and one in the second. The target is the sum of the
two marked values. Predicting the mean (1) gives MSE 1/6 ≈ 0.167; a model that
learns to hold the marked values across T steps drives the test MSE to ~0.001.
`--model=mlp|cnn` swaps the recurrent net for the non-recurrent baselines.

    .venv/bin/python -m experiments.adding                       # LSTM, T = 100
    .venv/bin/python -m experiments.adding --cell=elman --out_dir=runs/adding_elman
    .venv/bin/python -m experiments.adding --seq_len=200 --num_seeds=4

Writes `out_dir/config.json`, `metrics.jsonl`, `results.json` (`test_mse`,
`baseline_mse`, `solved_fraction`, per-seed values).
"""

import dataclasses
import time
from functools import partial

import jax
import jax.numpy as jnp

import jaxseq
from jaxseq import cli, data, models, training
from jaxseq.cells import registry

MODELS = ("rnn", "mlp", "cnn")


@dataclasses.dataclass(frozen=True)
class Config:
    model: str = "rnn"  # "rnn", or a non-recurrent baseline: "mlp", "cnn"
    cell: str = "lstm"  # recurrent cell by name (jaxseq.cells.registry.names())
    hidden_size: int = 64  # RNN width (MLP hidden width, CNN channels)
    seq_len: int = 100  # T: the two marked values can lie up to T - 1 steps apart
    seed: int = 0  # base seed; seed k uses fold_in(key(seed), k)
    num_seeds: int = 1  # independent models trained at once with jax.vmap
    steps: int = 2500  # updates per model
    batch_size: int = 64  # sequences per update, fresh from the generator each step
    optimizer: str = "adam"  # adam, adamw, rmsprop or sgd
    learning_rate: float = 3e-3  # peak step size
    grad_clip: float = 1.0  # global-norm clip (Pascanu et al. 2013); 0 disables
    schedule: str = "cosine"  # constant, cosine or linear decay to 0 at `steps`
    warmup_steps: int = 0  # linear warm-up from 0
    test_size: int = 2048  # held-out sequences for test_mse (one fixed key)
    log_every: int = 250  # steps between host syncs and log records
    eval_every: int = 0  # steps between test evaluations (0: at the end only)
    checkpoint_every: int = 0  # steps between orbax checkpoints (0: none)
    resume: bool = False  # continue from the latest checkpoint in out_dir
    tensorboard: bool = False  # also write TensorBoard event files
    out_dir: str = "runs/adding"  # config.json, metrics.jsonl, results.json
    mesh_data: int = 0  # devices on the mesh's data axis (0: all); batches split over them
    distributed: bool = False  # join a multi-host run (JAX_COORDINATOR_ADDRESS etc., or auto)


BASELINE_MSE = 1.0 / 6.0  # predicting the mean, E[(U1 + U2 - 1)^2]
SOLVED_MSE = 0.01  # Le et al. 2015's criterion: "MSE below 0.01"


def build_model(config: Config) -> models.Model:
    """The network: RNN + readout of the last state, or an MLP/CNN on the window."""
    if config.model == "rnn":
        cell = registry.by_name(config.cell, config.hidden_size)
        return models.classifier(jaxseq.rnn(cell), 1)
    if config.model == "mlp":
        return models.mlp((config.hidden_size, config.hidden_size), 1, seq_len=config.seq_len)
    return models.cnn1d((config.hidden_size, config.hidden_size), 5, 1, hidden=config.hidden_size)


def mse(model: models.Model, params, xs, targets):
    prediction = model.apply(params, xs)[..., 0] + 1.0  # start from the mean, 1
    return models.mean_squared_error(prediction, targets)


def main(config: Config) -> dict:
    training.check_config(config, hidden_size=config.hidden_size, test_size=config.test_size)
    if config.model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {config.model!r}")
    registry.by_name(config.cell, 1)  # an unknown cell name fails before any work
    if config.seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {config.seq_len}")
    model = build_model(config)

    def sample_batch(key, step):
        return data.adding(key, config.batch_size, config.seq_len)

    def loss_fn(params, batch, key):
        return mse(model, params, *batch), {}

    test_data = data.adding(jax.random.key(10_000 + config.seed), config.test_size, config.seq_len)

    def test_fn(params, xs, targets):
        return {"test_mse": mse(model, params, xs, targets)}

    start = time.perf_counter()
    state, history = training.train_seeds(
        config,
        partial(model.init, input_size=2),
        loss_fn,
        sample_batch,
        lambda params: test_fn(params, *test_data),
        batch_sharding=training.mesh_sharding(config, sample_batch, (1, 0)),  # xs [T,B,2], y [B]
        desc="adding",
    )
    values = training.evaluate(test_fn, state.params, *test_data, num_seeds=config.num_seeds)
    results = {
        **training.seed_results(values),
        "baseline_mse": BASELINE_MSE,
        "solved_fraction": float(jnp.mean(values["test_mse"] < SOLVED_MSE)),
        "model": config.model if config.model != "rnn" else config.cell,
        "seq_len": config.seq_len,
        **training.run_summary(config, start, history),
    }
    training.write_results(config.out_dir, results)
    print(
        f"adding T={config.seq_len} {results['model']}: test MSE {results['test_mse']:.4f} "
        f"± {results['test_mse_std']:.4f} over {config.num_seeds} seed(s) "
        f"(predicting the mean: {BASELINE_MSE:.4f}); solved {results['solved_fraction']:.0%}; "
        f"{results['train_seconds']:.0f} s; results in {config.out_dir}/results.json"
    )
    return results


if __name__ == "__main__":
    config = cli.parse(Config)
    training.join_distributed(config)  # --distributed=True: before any other JAX call
    main(config)
