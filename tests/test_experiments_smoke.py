"""Each experiment's `main` runs end to end on a tiny config and writes its artefacts."""

import json

import jax

from experiments import train_lstm


def test_train_lstm_smoke(tmp_path):
    config = train_lstm.Config(
        seq_len=8,
        batch_size=4,
        hidden_size=4,
        steps=3,
        log_every=2,
        eval_size=8,
        out_dir=str(tmp_path),
    )
    # optax's Adam mixes its int32 step count with Python floats, which the suite's
    # strict dtype promotion (meant for jaxseq's own code) rejects.
    with jax.numpy_dtype_promotion("standard"):
        results = train_lstm.main(config)
    assert set(results) >= {"test_mse", "baseline_mse", "solved", "steps"}
    assert json.loads((tmp_path / "results.json").read_text())["steps"] == 3
    assert json.loads((tmp_path / "config.json").read_text())["hidden_size"] == 4
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 3]


def test_adding_batch_targets_are_the_marked_sums(key):
    xs, targets = train_lstm.adding_batch(key, 5, 10)
    assert xs.shape == (10, 5, 2) and targets.shape == (5,)
    marker = xs[..., 1]
    assert (marker.sum(axis=0) == 2).all()
    assert (marker[:5].sum(axis=0) == 1).all()  # one marker in each half
    ref = (xs[..., 0] * marker).sum(axis=0)
    assert abs(ref - targets).max() < 1e-6
