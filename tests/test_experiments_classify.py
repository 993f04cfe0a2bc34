"""Smoke runs and config checks of experiments/digits.py, vowels.py and forecast.py.

Each `main` runs a tiny config end to end and must write config.json,
metrics.jsonl and results.json with its headline metrics; the reported
baselines and the input scaling are checked against NumPy / scikit-learn
computations written here from the raw data.
"""

import json
import math

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from experiments import digits, forecast, vowels
from jaxseq import cli, data

TINY = dict(steps=3, log_every=2, batch_size=4, hidden_size=4)
SLOW = pytest.mark.slow  # each run compiles its own init, train step and evaluation (~5-10 s)


def read_run(out_dir):
    """(config.json, [metrics.jsonl records], results.json) of a run directory."""
    config = json.loads((out_dir / "config.json").read_text())
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    results = json.loads((out_dir / "results.json").read_text())
    return config, records, results


def check_artefacts(out_dir, results, headline):
    config, records, written = read_run(out_dir)
    assert config["steps"] == 3 and config["hidden_size"] == 4
    assert [r["step"] for r in records] == [2, 3]
    assert "eval_" + headline in records[-1]
    for key in (headline, headline + "_std", headline + "_per_seed", "steps", "train_seconds"):
        assert key in written, key
    assert written[headline] == pytest.approx(results[headline])
    assert written["steps"] == 3


@pytest.mark.parametrize(
    "model", [pytest.param("rnn", marks=SLOW), "mlp", pytest.param("cnn", marks=SLOW)]
)
def test_digits_smoke(tmp_path, model):
    config = digits.Config(model=model, out_dir=str(tmp_path), **TINY)
    results = digits.main(config)
    check_artefacts(tmp_path, results, "test_accuracy")
    assert 0.0 <= results["test_accuracy"] <= 1.0
    assert results["train_size"] + results["test_size"] == 1797


@pytest.mark.slow
def test_digits_pixels_two_seeds(tmp_path):
    config = digits.Config(mode="pixels", num_seeds=2, out_dir=str(tmp_path), **TINY)
    results = digits.main(config)
    assert len(results["test_accuracy_per_seed"]) == 2
    assert results["test_accuracy"] == pytest.approx(np.mean(results["test_accuracy_per_seed"]))


@pytest.mark.parametrize("model", ["rnn", pytest.param("cnn", marks=SLOW)])
def test_vowels_smoke(tmp_path, model):
    config = vowels.Config(model=model, out_dir=str(tmp_path), **TINY)
    results = vowels.main(config)
    check_artefacts(tmp_path, results, "test_accuracy")
    assert (results["train_size"], results["test_size"]) == (270, 370)


def test_vowels_standardised_matches_sklearn():
    train, test = data.japanese_vowels()
    scaled_train, scaled_test = vowels.standardised(train, test)
    for raw, scaled in ((train, scaled_train), (test, scaled_test)):
        for i in (0, 5, len(raw.ys) - 1):
            n = raw.lengths[i]
            assert np.all(scaled.xs[i, n:] == 0.0)  # padding stays zero
    frames = np.concatenate([train.xs[i, : train.lengths[i]] for i in range(len(train.ys))])
    scaler = StandardScaler().fit(frames)  # fitted on the training frames only
    for raw, scaled in ((train, scaled_train), (test, scaled_test)):
        i = 7
        want = scaler.transform(raw.xs[i, : raw.lengths[i]])
        np.testing.assert_allclose(scaled.xs[i, : raw.lengths[i]], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model", [pytest.param("rnn", marks=SLOW), "mlp"])
def test_forecast_smoke_and_seasonal_naive(tmp_path, model):
    config = forecast.Config(model=model, context=14, horizon=3, out_dir=str(tmp_path), **TINY)
    results = forecast.main(config)
    check_artefacts(tmp_path, results, "test_mse")
    # Seasonal naive on the last 20% of the months, brute force from the raw series.
    series = data.co2().astype(np.float64)
    n_test = round(len(series) * 0.2)
    n_train = len(series) - n_test
    errors = []
    for origin in range(n_train, len(series) - 3 + 1):  # first target month of each window
        for h in range(1, 4):
            target = origin + h - 1
            errors.append((series[target] - series[target - 12]) ** 2)
    assert results["test_windows"] == n_test - 3 + 1
    assert (results["train_months"], results["test_months"]) == (n_train, n_test)
    assert results["seasonal_naive_mse"] == pytest.approx(np.mean(errors), rel=1e-5)
    assert results["beats_seasonal_naive"] == (results["test_mse"] < np.mean(errors))
    assert math.isfinite(results["test_mse"]) and "ppm" in results["mse_units"]


def test_forecast_windows_are_relative_to_the_last_value():
    part = np.arange(30, dtype=np.float32) ** 1.5
    config = forecast.Config(context=12, horizon=2)
    ds, xs, ys = forecast.relative_windows(part, config, scale=2.0)
    i = 4
    np.testing.assert_allclose(xs[i, :, 0], part[i : i + 12])
    np.testing.assert_allclose(ys[i], part[i + 12 : i + 14])
    np.testing.assert_allclose(ds.xs[i, :, 0], (part[i : i + 12] - part[i + 11]) / 2.0)
    np.testing.assert_allclose(ds.ys[i], (part[i + 12 : i + 14] - part[i + 11]) / 2.0)
    assert ds.lengths.tolist() == [12] * (30 - 12 - 2 + 1)


@pytest.mark.parametrize("module", [digits, vowels, forecast])
def test_unknown_flag_and_bad_steps_rejected(module):
    with pytest.raises(SystemExit):
        cli.parse(module.Config, ["--bogus=1"])
    with pytest.raises(SystemExit):
        cli.parse(module.Config, ["--steps=many"])
    assert cli.parse(module.Config, ["--steps=7"]).steps == 7
    with pytest.raises(ValueError, match="steps"):
        module.main(module.Config(steps=0))


@pytest.mark.parametrize(
    "module, field, value",
    [
        (digits, "model", "rnn2"),
        (digits, "mode", "columns"),
        (digits, "cell", "nope"),
        (digits, "pooling", "sum"),
        (digits, "dropout", 1.0),
        (vowels, "model", "transformer"),
        (vowels, "hidden_size", 0),
        (forecast, "context", 11),
        (forecast, "horizon", 0),
        (forecast, "test_fraction", 1.0),
    ],
)
def test_bad_values_rejected_by_name(tmp_path, module, field, value):
    config = module.Config(out_dir=str(tmp_path), **{field: value})
    with pytest.raises(ValueError, match=field if field != "cell" else "nope"):
        module.main(config)
    assert not (tmp_path / "config.json").exists()  # rejected before any work
