"""The whole training run of a sequence classifier, as the digits and vowels experiments do it."""

import time
from typing import Any

import jax
import jax.numpy as jnp

from jaxseq import data, models
from jaxseq.training.experiment import mesh_sharding, run_summary, seed_results, train_seeds
from jaxseq.training.seeds import evaluate

# batch axis of xs [T, B, F], lengths [B] and ys [B] in a `data.Batch`
BATCH_AXES = data.Batch(xs=1, lengths=0, ys=0)


def train_classifier(
    config: Any, model: models.Model, train: data.Dataset, test: data.Dataset, desc: str
) -> dict[str, Any]:
    """Trains `config.num_seeds` copies of `model` on `train` and evaluates them on `test`.

    Cross-entropy on minibatches of `config.batch_size` sequences sampled from
    `train` (`data.sample_batch`), `train_seeds` for the loop (optimizer, steps,
    checkpoints, mesh flags from `config`), then test accuracy and loss on the
    whole of `test`.

    Args:
      config: an experiment `Config` with the common training fields, `model`
        ("rnn" or a baseline's name) and `cell`.
      model: a classifier, `apply(params, xs, lengths, key=None) -> logits`.
      train: the training set (arrays, `[N, T, F]` xs as `data.as_jax` returns).
      test: the test set.
      desc: the progress bar's label.

    Returns:
      `test_accuracy`, `test_loss` (mean, `_std`, `_per_seed`), `model`,
      `train_size`, `test_size` and the run summary (`train_seconds`, ...).
    """
    features = train.xs.shape[-1]

    def sample_batch(key, step):
        return data.sample_batch(train, key, config.batch_size)

    def loss_fn(params, batch, key):
        logits = model.apply(params, batch.xs, batch.lengths, key=key)
        return models.cross_entropy(logits, batch.ys), {}

    def test_fn(params, xs, lengths, ys):
        logits = model.apply(params, xs, lengths)
        return {
            "test_accuracy": models.accuracy(logits, ys),
            "test_loss": models.cross_entropy(logits, ys),
        }

    test_batch = jax.tree.map(jnp.asarray, data.full_batch(test))
    start = time.perf_counter()
    state, history = train_seeds(
        config,
        lambda key: model.init(key, features),
        loss_fn,
        sample_batch,
        lambda params: test_fn(params, *test_batch),
        batch_sharding=mesh_sharding(config, sample_batch, BATCH_AXES),
        desc=desc,
    )
    values = evaluate(test_fn, state.params, *test_batch, num_seeds=config.num_seeds)
    return {
        **seed_results(values),
        "model": config.model if config.model != "rnn" else config.cell,
        "train_size": int(train.xs.shape[0]),
        "test_size": int(test.xs.shape[0]),
        **run_summary(config, start, history),
    }
