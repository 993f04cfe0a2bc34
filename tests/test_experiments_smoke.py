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
