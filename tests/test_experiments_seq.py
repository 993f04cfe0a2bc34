"""The copy-memory and seq2seq experiments: data, metrics against references, smoke runs."""

import itertools
import json
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import copy_memory, seq2seq
from jaxseq import cli, data, models

# Smoke configs use the one-matrix Elman cell: compiling the vmapped LSTM init (four
# orthogonal blocks per cell) dominates a tiny run's time; the cell is only a registry name.
TINY_COPY = copy_memory.Config(
    cell="elman", hidden_size=4, delay=5, steps=3, batch_size=4, test_size=8, log_every=2
)
TINY_SEQ2SEQ = seq2seq.Config(
    cell="elman",
    hidden_size=4,
    embed_size=3,
    max_len=4,
    steps=3,
    batch_size=4,
    test_size=8,
    log_every=2,
)

_copy_data = jax.jit(data.copy_memory, static_argnums=(1, 2))
_strings = jax.jit(seq2seq.digit_strings, static_argnums=(1, 2, 3, 4))
_decode = jax.jit(seq2seq.decode_metrics)


def _artefacts(out_dir) -> tuple[dict, dict, list[dict]]:
    config = json.loads((out_dir / "config.json").read_text())
    results = json.loads((out_dir / "results.json").read_text())
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return config, results, [json.loads(line) for line in lines]


# copy memory


def test_copy_memory_smoke(tmp_path):
    config = copy_memory.Config(**{**vars(TINY_COPY), "out_dir": str(tmp_path)})
    results = copy_memory.main(config)
    saved_config, saved, records = _artefacts(tmp_path)
    assert saved_config["delay"] == 5
    assert [record["step"] for record in records] == [2, 3]
    assert "eval_test_loss" in records[-1]
    for name in ("test_loss", "test_recall_accuracy", "baseline_loss", "train_seconds"):
        assert saved[name] == pytest.approx(results[name])
    assert saved["steps"] == 3 and saved["num_seeds"] == 1
    assert len(saved["test_loss_per_seed"]) == 1
    assert saved["baseline_loss"] == pytest.approx(10 * math.log(8) / 25)
    assert 0.0 < saved["test_loss"] < 2 * math.log(10)  # near the ln 10 of a fresh readout
    assert 0.0 <= saved["test_recall_accuracy"] <= 1.0


def _fixed_model(logits_fn) -> models.Model:
    """A stand-in `Model` whose logits are a fixed function of the one-hot inputs."""
    return models.Model(lambda key, input_size: {}, lambda params, xs: logits_fn(xs))


def _metrics(model: models.Model, xs, targets) -> dict:
    return jax.jit(partial(copy_memory.copy_metrics, model, {}))(xs, targets)


def test_copy_metrics_memoryless_strategy_scores_the_baseline():
    # Blank (class 0) with certainty before the delimiter is seen; uniform over the
    # 8 symbols afterwards: exactly 10 ln 8 / (T + 20) nats per step, recall at chance.
    xs, targets = _copy_data(jax.random.key(1), 64, 7)

    def memoryless(xs):
        cue = xs[..., 9:]
        seen = jnp.cumsum(cue, axis=0) - cue > 0  # the delimiter came strictly before t
        after = jnp.log(jnp.asarray([0.0] + [1.0] * 8 + [0.0]))[None, None]
        before = jnp.log(jnp.asarray([1.0] + [0.0] * 9))[None, None]
        return jnp.where(seen, after, before)

    metrics = _metrics(_fixed_model(memoryless), xs, targets)
    assert float(metrics["test_loss"]) == pytest.approx(10 * math.log(8) / 27, rel=1e-5)
    # argmax of a uniform row is symbol 1, right where the target is 1
    expected = np.mean(np.asarray(targets)[-10:] == 1)
    assert float(metrics["test_recall_accuracy"]) == pytest.approx(expected)


def test_copy_metrics_perfect_recall():
    xs, targets = _copy_data(jax.random.key(2), 64, 7)
    oracle = _fixed_model(lambda xs: 50.0 * jax.nn.one_hot(targets, 10))  # knows the answer
    metrics = _metrics(oracle, xs, targets)
    assert float(metrics["test_recall_accuracy"]) == 1.0
    assert float(metrics["test_loss"]) < 1e-6


@pytest.mark.parametrize(
    "changes, field",
    [({"steps": 0}, "steps"), ({"delay": 0}, "delay"), ({"cell": "nope"}, "cell")],
)
def test_copy_memory_rejects_bad_config(tmp_path, changes, field):
    config = copy_memory.Config(**{**vars(TINY_COPY), **changes, "out_dir": str(tmp_path)})
    with pytest.raises(ValueError, match=field):
        copy_memory.main(config)
    assert not (tmp_path / "config.json").exists()  # rejected before any work


def test_copy_memory_cli_rejects_unknown_flag():
    assert cli.parse(copy_memory.Config, ["--delay=7"]).delay == 7
    with pytest.raises(SystemExit):
        cli.parse(copy_memory.Config, ["--bogus=1"])
    with pytest.raises(SystemExit):
        cli.parse(copy_memory.Config, ["--delay=abc"])


# seq2seq


def _reference(src: list[int], task: str) -> list[int]:
    return src[::-1] if task == "reverse" else sorted(src)


@pytest.mark.parametrize("task", seq2seq.TASKS)
def test_digit_strings_match_a_python_reference(task):
    batch = jax.device_get(_strings(jax.random.key(3), 64, task, 1, 6))
    assert batch.src.shape == (6, 64) and batch.tgt_out.shape == (7, 64)
    assert set(batch.src_lengths.tolist()) == {1, 2, 3, 4, 5, 6}
    pad, eos, bos = seq2seq.PAD, seq2seq.EOS, seq2seq.BOS
    for b in range(64):
        n = int(batch.src_lengths[b])
        src = batch.src[:, b].tolist()
        assert all(0 <= d <= 9 for d in src[:n]) and src[n:] == [0] * (6 - n)
        want = _reference(src[:n], task) + [eos] + [pad] * (6 - n)
        assert batch.tgt_out[:, b].tolist() == want
        assert batch.tgt_in[:, b].tolist() == [bos] + want[:-1]
        assert batch.tgt_mask[:, b].tolist() == [True] * (n + 1) + [False] * (6 - n)


def test_digit_strings_is_a_pure_function_of_the_key():
    first = _strings(jax.random.key(4), 64, "sort", 1, 6)  # shapes shared: one compile
    again = _strings(jax.random.key(4), 64, "sort", 1, 6)
    other = _strings(jax.random.key(5), 64, "sort", 1, 6)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.src, other.src)


def test_decode_metrics():
    batch = _strings(jax.random.key(6), 64, "reverse", 1, 6)
    right = _decode(batch.tgt_out, batch)
    assert float(right["test_sequence_accuracy"]) == 1.0
    assert float(right["test_token_accuracy"]) == 1.0
    # One wrong digit in sequence 0; a digit after EOS (where PAD belongs) in sequence b.
    lengths = np.asarray(batch.src_lengths)
    b = 1 + int(np.argmax(lengths[1:] < 6))
    tokens = np.array(batch.tgt_out)
    tokens[0, 0] = (tokens[0, 0] + 1) % 10
    tokens[lengths[b] + 1, b] = 3
    wrong = _decode(jnp.asarray(tokens), batch)
    assert float(wrong["test_sequence_accuracy"]) == pytest.approx(1 - 2 / 64)
    assert float(wrong["test_token_accuracy"]) == pytest.approx(1 - 1 / np.sum(lengths + 1))


@pytest.mark.parametrize("task", seq2seq.TASKS)
def test_identity_reference_matches_enumeration(task):
    # Brute force over every string of 1..4 digits: how often is the answer the input?
    hits = []
    for n in range(1, 5):
        strings = itertools.product(range(10), repeat=n)
        hits.append(np.mean([_reference(list(s), task) == list(s) for s in strings]))
    expected = np.mean(hits)
    assert seq2seq.identity_sequence_accuracy(task, 1, 4) == pytest.approx(expected)
    assert seq2seq.identity_sequence_accuracy(task, 3, 3) == pytest.approx(hits[2])


def test_seq2seq_smoke(tmp_path):
    config = seq2seq.Config(**{**vars(TINY_SEQ2SEQ), "task": "sort", "out_dir": str(tmp_path)})
    results = seq2seq.main(config)
    saved_config, saved, records = _artefacts(tmp_path)
    assert saved_config["task"] == "sort" and saved_config["max_len"] == 4
    assert [record["step"] for record in records] == [2, 3]
    assert "eval_test_sequence_accuracy" in records[-1]
    for name in ("test_sequence_accuracy", "test_token_accuracy", "test_loss"):
        assert saved[name] == pytest.approx(results[name])
        assert len(saved[name + "_per_seed"]) == 1
    assert 0.0 <= saved["test_sequence_accuracy"] <= saved["test_token_accuracy"] <= 1.0
    assert saved["chance_token_accuracy"] == 0.1
    assert saved["identity_sequence_accuracy"] == seq2seq.identity_sequence_accuracy("sort", 1, 4)
    assert saved["steps"] == 3 and saved["num_seeds"] == 1


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"steps": 0}, "steps"),
        ({"task": "shuffle"}, "task"),
        ({"min_len": 5}, "min_len"),
        ({"max_len": 0}, "max_len"),
        ({"embed_size": 0}, "embed_size"),
    ],
)
def test_seq2seq_rejects_bad_config(tmp_path, changes, field):
    config = seq2seq.Config(**{**vars(TINY_SEQ2SEQ), **changes, "out_dir": str(tmp_path)})
    with pytest.raises(ValueError, match=field):
        seq2seq.main(config)
    assert not (tmp_path / "config.json").exists()


def test_seq2seq_cli_rejects_unknown_flag():
    assert cli.parse(seq2seq.Config, ["--task=sort"]).task == "sort"
    with pytest.raises(SystemExit):
        cli.parse(seq2seq.Config, ["--bogus=1"])
