"""The main job, `experiments.adding`, on tiny configs: artefacts, seeds, resume, errors."""

import dataclasses
import json

import pytest

from experiments import adding
from jaxseq import cli

TINY = adding.Config(
    hidden_size=4,
    seq_len=6,
    steps=4,
    batch_size=4,
    test_size=8,
    log_every=2,
    num_seeds=2,
    schedule="constant",  # a cosine schedule would depend on `steps`, which the resume test varies
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("adding")
    return out, adding.main(dataclasses.replace(TINY, out_dir=str(out)))


def test_writes_config_metrics_and_results(tiny_run):
    out, results = tiny_run
    saved = json.loads((out / "results.json").read_text())
    assert saved["baseline_mse"] == pytest.approx(1 / 6)
    assert len(saved["test_mse_per_seed"]) == 2
    assert saved["test_mse"] == pytest.approx(sum(saved["test_mse_per_seed"]) / 2)
    assert saved == json.loads(json.dumps(results))
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 4
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]


def test_seeds_differ(tiny_run):
    _, results = tiny_run
    first, second = results["test_mse_per_seed"]
    assert first != second


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_baselines_run(tmp_path, model):
    config = dataclasses.replace(TINY, model=model, num_seeds=1, out_dir=str(tmp_path))
    results = adding.main(config)
    assert results["model"] == model and results["test_mse"] >= 0


def test_resume_equals_uninterrupted(tmp_path, tiny_run):
    _, uninterrupted = tiny_run
    config = dataclasses.replace(TINY, out_dir=str(tmp_path), checkpoint_every=2)
    adding.main(dataclasses.replace(config, steps=2))
    resumed = adding.main(dataclasses.replace(config, resume=True))
    assert resumed["test_mse_per_seed"] == pytest.approx(uninterrupted["test_mse_per_seed"])


@pytest.mark.parametrize(
    ("field", "value"),
    [("steps", 0), ("hidden_size", -1), ("model", "rnnn"), ("cell", "lstmm"), ("seq_len", 1),
     ("optimizer", "adamm"), ("num_seeds", 0), ("mesh_data", -1)],
)  # fmt: skip
def test_bad_values_name_the_field(tmp_path, field, value):
    config = dataclasses.replace(TINY, out_dir=str(tmp_path / "x"), **{field: value})
    with pytest.raises(ValueError, match=field):
        adding.main(config)
    assert not (tmp_path / "x").exists()  # rejected before anything is written


def test_unknown_flag_is_rejected(capsys):
    with pytest.raises(SystemExit):
        cli.parse(adding.Config, ["--seq_length=100"])
    assert "seq_length" in capsys.readouterr().err
