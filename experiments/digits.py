"""scikit-learn's handwritten digits read as sequences: a sequence classifier.

Each 8×8 image (1797 of them, 10 classes) is read top to bottom, one row of 8
pixels a step (`--mode=rows`: T = 8, F = 8), or pixel by pixel (`--mode=pixels`:
T = 64, F = 1, a longer-range task). The RNN reads the sequence and a dense
readout classifies its last state. `--model=mlp|cnn` swaps in the non-recurrent
baselines on the same sequences, with the same command otherwise. The split is
`jaxseq.data.digits`' stratified 75/25 split (1347 train / 450 test); training
draws minibatches from the training part with a key, so a run is a pure
function of (seed, step).

    .venv/bin/python -m experiments.digits                      # GRU-128, rows
    .venv/bin/python -m experiments.digits --model=mlp --out_dir=runs/digits_mlp
    .venv/bin/python -m experiments.digits --model=cnn --out_dir=runs/digits_cnn
    .venv/bin/python -m experiments.digits --cell=lstm --dropout=0.5 --num_seeds=3

Expected with the defaults (1500 steps, ~50 s on 2 shared CPU cores): GRU 0.980
test accuracy (0.980–0.984 over 3 seeds); MLP 0.980 and CNN 0.987 with the same
command (an 8×8 digit needs little sequential structure). An LSTM-128 with
dropout 0.5 reaches 0.971–0.976. Writes `out_dir/config.json`, `metrics.jsonl`,
`results.json` (`test_accuracy`, `test_loss`, per-seed values).
"""

import dataclasses

import jaxseq
from jaxseq import cli, data, models, training
from jaxseq.cells import registry

MODELS = ("rnn", "mlp", "cnn")
MODES = ("rows", "pixels")
POOLINGS = ("last", "mean", "max")


@dataclasses.dataclass(frozen=True)
class Config:
    model: str = "rnn"  # "rnn", or a non-recurrent baseline: "mlp", "cnn"
    cell: str = "gru"  # recurrent cell by name (jaxseq.cells.registry.names())
    mode: str = "rows"  # "rows": 8 steps × 8 pixels; "pixels": 64 steps × 1 pixel
    hidden_size: int = 128  # RNN width (MLP hidden width, CNN channels)
    bidirectional: bool = False  # RNN: also read the rows bottom to top
    # (bidirectional lstm/gru with num_seeds > 1 hangs in XLA's batched QR on jaxlib 0.10.2)
    pooling: str = "last"  # RNN: "last" state, or "mean" / "max" of the states over time
    dropout: float = 0.3  # dropout rate on the features before the readout
    seed: int = 0  # base seed; seed k uses fold_in(key(seed), k)
    num_seeds: int = 1  # independent models trained at once with jax.vmap
    steps: int = 1500  # updates per model
    batch_size: int = 64  # images per update, drawn with replacement from the train part
    optimizer: str = "adam"  # adam, adamw, rmsprop or sgd
    learning_rate: float = 3e-3  # peak step size
    grad_clip: float = 1.0  # global-norm clip (Pascanu et al. 2013); 0 disables
    schedule: str = "cosine"  # constant, cosine or linear decay to 0 at `steps`
    warmup_steps: int = 0  # linear warm-up from 0
    log_every: int = 250  # steps between host syncs and log records
    eval_every: int = 0  # steps between test evaluations (0: at the end only)
    checkpoint_every: int = 0  # steps between orbax checkpoints (0: none)
    resume: bool = False  # continue from the latest checkpoint in out_dir
    tensorboard: bool = False  # also write TensorBoard event files
    out_dir: str = "runs/digits"  # config.json, metrics.jsonl, results.json
    mesh_data: int = 0  # devices on the mesh's data axis (0: all); batches split over them
    distributed: bool = False  # join a multi-host run (JAX_COORDINATOR_ADDRESS etc., or auto)


def check(config: Config) -> None:
    """Rejects bad config values by field name, before any work."""
    training.check_config(config, hidden_size=config.hidden_size)
    if config.model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {config.model!r}")
    if config.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {config.mode!r}")
    registry.by_name(config.cell, 1)  # an unknown cell name fails before any work
    if config.pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {config.pooling!r}")
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {config.dropout!r}")


def build_model(config: Config, seq_len: int) -> models.Model:
    """The network: RNN + readout of the last state, or an MLP/CNN on the whole sequence."""
    h, classes, rate = config.hidden_size, data.DIGITS_NUM_CLASSES, config.dropout
    if config.model == "rnn":
        cell = registry.by_name(config.cell, h)
        layer = jaxseq.rnn(cell, bidirectional=config.bidirectional)
        return models.classifier(layer, classes, pooling=config.pooling, dropout=rate)
    if config.model == "mlp":
        return models.mlp((h, h), classes, seq_len=seq_len, dropout=rate)
    return models.cnn1d((h, h), 3, classes, hidden=h, dropout=rate)


def main(config: Config) -> dict:
    check(config)
    train, test = data.digits(config.mode)
    train = data.as_jax(train)
    model = build_model(config, seq_len=train.xs.shape[1])
    results = training.train_classifier(config, model, train, test, desc="digits")
    results["mode"] = config.mode
    training.write_results(config.out_dir, results)
    print(
        f"digits ({config.mode}) {results['model']}: test accuracy "
        f"{results['test_accuracy']:.4f} ± {results['test_accuracy_std']:.4f} over "
        f"{config.num_seeds} seed(s); {results['train_seconds']:.0f} s; "
        f"results in {config.out_dir}/results.json"
    )
    return results


if __name__ == "__main__":
    config = cli.parse(Config)
    training.join_distributed(config)  # --distributed=True: before any other JAX call
    main(config)
