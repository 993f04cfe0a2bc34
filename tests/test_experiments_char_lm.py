"""experiments.char_lm end to end on a tiny config, and benchmarks.char_lm_torch --smoke.

The benchmark's smoke trains the same tiny language model with jaxseq and with
PyTorch for a few steps from the same weights on the same batches: equal
per-step losses prove the weight, optimizer and data mapping.
"""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import torch

from benchmarks import char_lm_torch
from experiments import char_lm
from jaxseq import cli, data

TINY = char_lm.Config(
    hidden_size=8,
    embed_size=4,
    seq_len=10,
    steps=3,
    batch_size=4,
    eval_len=20,
    eval_windows=3,
    sample_len=12,
    log_every=2,
    num_seeds=2,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("char_lm")
    return out, char_lm.main(dataclasses.replace(TINY, out_dir=str(out)))


@pytest.fixture(scope="module")
def bench():
    args = char_lm_torch.parse_args(["--smoke"])
    setup = char_lm_torch.prepare(args)
    return args, setup, char_lm_torch.run_jaxseq(setup, args), char_lm_torch.run_torch(setup, args)


def test_writes_config_metrics_and_results(tiny_run):
    out, results = tiny_run
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    for name in ("val_bpc", "train_bpc"):
        assert len(saved[name + "_per_seed"]) == 2
        assert saved[name] == pytest.approx(np.mean(saved[name + "_per_seed"]))
    assert saved["eval_characters"] == 60
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 8
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 3]
    assert records[-1]["eval_val_bpc"] == pytest.approx(saved["val_bpc"], rel=1e-5)


def test_untrained_model_predicts_about_uniformly(tiny_run):
    # 3 tiny steps barely move the model: its bpc is near log2(65) = 6.02 bits
    # (a nats/bits mix-up would give ~4.2)
    _, results = tiny_run
    assert results["val_bpc"] == pytest.approx(math.log2(65), abs=0.3)


def test_unigram_bpc_is_the_training_text_entropy(tiny_run):
    _, results = tiny_run
    train_ids, _, _ = data.char_corpus("kjv")
    counts = np.unique(np.asarray(train_ids), return_counts=True)[1]
    assert results["unigram_bpc"] == pytest.approx(scipy.stats.entropy(counts, base=2), rel=1e-9)
    assert 4.0 < results["unigram_bpc"] < 4.6


def test_samples_are_text_from_the_vocabulary(tiny_run):
    _, results = tiny_run
    _, _, vocab = data.char_corpus("kjv")
    assert set(results["samples"]) == {"temperature_1.0", "temperature_0.5", "greedy"}
    for text in results["samples"].values():
        assert len(text) == TINY.sample_len and set(text) <= set(vocab.chars)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("hidden_size", 0),
        ("seq_len", 0),
        ("embed_size", -1),
        ("cell", "lstmm"),
        ("eval_windows", 10**6),
        ("prompt", "€uro"),
        ("prompt", ""),
        ("dropout", 1.0),
    ],
)
def test_bad_values_name_the_field(tmp_path, field, value):
    config = dataclasses.replace(TINY, out_dir=str(tmp_path / "x"), **{field: value})
    with pytest.raises(ValueError, match=field):
        char_lm.main(config)
    assert not (tmp_path / "x").exists()  # rejected before anything is written


def test_unknown_flag_is_rejected(capsys):
    with pytest.raises(SystemExit):
        cli.parse(char_lm.Config, ["--bogus=1"])
    assert "bogus" in capsys.readouterr().err


def test_benchmark_batches_are_shifted_corpus_windows(bench):
    args, setup, _, _ = bench
    train_ids, _, _ = data.char_corpus("kjv")
    inputs, targets = setup["inputs"], setup["targets"]
    assert inputs.shape == (args.steps, args.seq_len, args.batch_size)
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    windows = np.lib.stride_tricks.sliding_window_view(train_ids, args.seq_len + 1)
    column = np.concatenate([inputs[0, :, 0], targets[0, -1:, 0]])
    assert (windows == column).all(axis=1).any()  # a real window of the training text


def test_torch_model_starts_from_the_jaxseq_weights_and_bpc_is_bits(bench):
    # the experiment's model and `bpc` on the benchmark's initial weights, against
    # PyTorch's logits from the converted weights and a NumPy log-softmax
    args, setup, _, _ = bench
    config = char_lm.Config(hidden_size=args.hidden_size, embed_size=args.embed_size)
    model = char_lm.build_model(config, setup["vocab_size"])
    tokens, targets = setup["inputs"][0], setup["targets"][0]

    @jax.jit
    def logits_and_bpc(params, tokens, targets):
        return model.apply(params, tokens)[0], char_lm.bpc(model, params, tokens, targets)

    params = jax.tree.map(jnp.asarray, setup["params"])
    logits, bpc = logits_and_bpc(params, tokens, targets)
    module, trainable = char_lm_torch.torch_model(setup, args)
    with torch.no_grad():
        expected = module(torch.tensor(tokens, dtype=torch.long)).numpy()
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-5)
    log_p = expected - np.log(np.sum(np.exp(expected.astype(np.float64)), -1, keepdims=True))
    nll = -np.take_along_axis(log_p, targets[..., None].astype(np.int64), axis=-1)
    assert float(bpc) == pytest.approx(np.mean(nll) / np.log(2.0), rel=1e-5)
    assert sum(p.numel() for p in trainable) == sum(x.size for x in jax.tree.leaves(params))


def test_benchmark_frameworks_agree_step_by_step(bench):
    args, _, jax_run, torch_run = bench
    assert len(jax_run["losses"]) == len(torch_run["losses"]) == args.steps
    np.testing.assert_allclose(torch_run["losses"], jax_run["losses"], rtol=2e-5)
    assert jax_run["losses"][-1] != jax_run["losses"][0]  # the parameters did move
    assert torch_run["val_bpc"] == pytest.approx(jax_run["val_bpc"], rel=2e-5)
    summary = char_lm_torch.compare(
        char_lm_torch.summarise(jax_run, args), char_lm_torch.summarise(torch_run, args)
    )
    assert summary["final_loss_rel_diff"] < 1e-4


def test_benchmark_rejects_bad_flags(capsys):
    with pytest.raises(SystemExit):
        char_lm_torch.parse_args(["--smoke", "--steps=0"])
    assert "--steps" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_smoke_end_to_end(tmp_path):
    out = tmp_path / "bench.jsonl"
    result = char_lm_torch.main(["--smoke", f"--out={out}"])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["impl"] for r in records] == ["jaxseq", "torch", "summary"]
    assert result["summary"]["final_loss_rel_diff"] < 1e-4
    assert result["summary"]["speed_ratio_torch_over_jaxseq"] > 0
