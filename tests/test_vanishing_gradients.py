"""The vanishing-gradient study and its helpers (jaxseq.diagnostics.study).

References: `np.polyfit` for the decay rate; theory for the profiles (a linear RNN
with U = r·Q, Q orthogonal, has ‖∂L/∂h‖ exactly ∝ r^lag; a tanh RNN decays at least
as fast, Pascanu et al. 2013); `training.fit` for `track_training` (same data,
keys and updates, so the same final model). One tiny run of the whole study is
shared by the smoke tests; the true `--quick` run is marked slow.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import vanishing_gradients as vg
from jaxseq import ElmanParams, cli, elman
from jaxseq.diagnostics import study

TINY = vg.Config(
    cells="elman@0.5,elman@1.0",
    seq_lens="8",
    decay_len=8,
    ablation_cells="elman@0.5",
    ablation_len=8,
    explode_len=8,
    explode_steps=3,
    track_cells="elman@0.5",
    track_len=8,
    track_every=2,
    hidden_size=8,
    test_size=16,
    num_seeds=2,
    steps=3,
    batch_size=4,
    log_every=2,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vanishing")
    return out, vg.main(dataclasses.replace(TINY, out_dir=str(out)))


# decay_rate: a least-squares slope against np.polyfit

_decay_rate = jax.jit(study.decay_rate)


def test_decay_rate_matches_polyfit_on_the_usable_lags():
    profile = np.array([-1.0, -1.4, -2.1, -np.inf, -2.9, -3.3, -40.0, np.nan, -4.8], np.float32)
    usable = np.isfinite(profile) & (profile > study.FLOOR)
    lags = np.arange(len(profile))[usable]
    expected = np.polyfit(lags, profile[usable].astype(np.float64), 1)[0]
    np.testing.assert_allclose(float(_decay_rate(jnp.asarray(profile))), expected, rtol=1e-5)


def test_decay_rate_is_nan_with_fewer_than_two_usable_lags_and_rejects_2d():
    assert np.isnan(float(_decay_rate(jnp.asarray([-1.0, -np.inf, -50.0]))))
    with pytest.raises(ValueError, match="profile must be 1-D"):
        _decay_rate(jnp.zeros((2, 3)))


# theory


T, B, H = 12, 3, 5
LINEAR = elman(H, activation="identity")  # h_t = x_t W + h_{t-1} U + b


@jax.jit
def _linear_profile_and_rate(params, xs, weights):
    profile = study.gradient_profile(LINEAR, params, xs, lambda ys: jnp.sum(weights * ys[-1]))
    return profile, study.decay_rate(profile)


def test_linear_rnn_profile_is_a_line_of_slope_log10_radius():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(H, H)))  # orthogonal: ‖v Qᵏ‖ = ‖v‖
    xs = jnp.asarray(rng.normal(size=(T, B, 2)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
    w_x, b = jnp.asarray(rng.normal(size=(2, H)), jnp.float32), jnp.zeros(H)
    for radius in (0.5, 0.9, 1.2):
        params = ElmanParams(w_x, jnp.asarray(radius * q, jnp.float32), b)
        profile, rate = _linear_profile_and_rate(params, xs, weights)
        expected = profile[0] + np.arange(T) * np.log10(radius)  # ∂L/∂h at lag k: v (Uᵀ)ᵏ
        np.testing.assert_allclose(profile, expected, atol=2e-4)
        np.testing.assert_allclose(float(rate), np.log10(radius), atol=1e-4)


def test_tanh_rnn_decays_faster_at_small_radius_and_within_the_bound(tiny_run):
    _, results = tiny_run
    rates, bounds = results["decay_rate_per_step"], results["decay_bound_per_step"]
    assert rates["elman@0.5"] < rates["elman@1.0"] < 0.0
    assert rates["elman@0.5"] < -0.25  # about log10 0.5 = -0.30, or steeper with tanh
    for cell, radius in (("elman@0.5", 0.5), ("elman@1.0", 1.0)):
        assert bounds[cell] == pytest.approx(np.log10(radius), abs=1e-4)  # σ_max(r·Q) = r
        assert rates[cell] <= bounds[cell] + 5e-3


# the study end to end (tiny config)


def test_study_writes_every_artefact(tiny_run):
    out, results = tiny_run
    for name in ("report.md", "results.json", "config.json", *vg.PLOTS):
        assert (out / name).stat().st_size > 0, name
    for name in vg.PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in (out / "report.md").read_text()
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["decay_rate_per_step"]) == {"elman@0.5", "elman@1.0"}
    assert saved["decay_rate_per_step"]["elman@0.5"] == pytest.approx(
        results["decay_rate_per_step"]["elman@0.5"]
    )
    assert set(saved["solved_fraction"]) == {"elman@0.5", "elman@1.0"}
    assert 0.0 <= saved["solved_fraction"]["elman@1.0"]["8"] <= 1.0
    assert len(saved["adding"]["elman@0.5"]["8"]["test_mse_per_seed"]) == 2
    assert json.loads((out / "config.json").read_text())["cells"] == TINY.cells
    records = (out / "runs" / "elman@0.5_T8" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in records] == [2, 3]


def test_study_report_has_one_finding_per_part(tiny_run):
    out, results = tiny_run
    report = (out / "report.md").read_text()
    assert report.count("**Finding.**") == 5
    for finding in results["findings"].values():
        assert finding in report
    assert "elman@0.5" in results["findings"]["decay"]
    assert "Seeds" in report and "Runtime" in report


def test_exploding_part_runs_every_radius_with_and_without_clipping(tiny_run):
    _, results = tiny_run
    runs = results["exploding"]["runs"]
    assert set(runs) == {f"elman@{r} clip={c}" for r in ("1.5", "3") for c in ("0", "1")}
    # SGD, momentum 0.9: after n clipped steps ‖update‖ <= lr · clip · (1 + 0.9 + ... + 0.9^(n-1))
    bound = TINY.explode_learning_rate * TINY.explode_grad_clip * sum(0.9**i for i in range(3))
    for name, run in runs.items():
        assert len(run["loss_curve"]) == TINY.explode_steps
        if run["grad_clip"] > 0:
            assert run["max_update_norm"] <= bound * (1 + 1e-5), name
    assert runs["elman@3 clip=0"]["max_update_norm"] > bound  # unclipped: ‖g‖ ≈ 30 at ρ = 3


def test_track_training_reproduces_fit(tiny_run):
    # part 5 tracks elman@0.5 at T = 8: the same init, data and keys as part 2's fit run
    _, results = tiny_run
    tracked = results["tracking"]["elman@0.5"]
    assert list(tracked["steps"]) == [0, 2, 3]
    assert np.shape(tracked["log10_grad_norm"]) == (3, TINY.track_len)
    assert tracked["test_mse"] == pytest.approx(results["adding"]["elman@0.5"]["8"]["test_mse"])


def test_findings_are_computed_from_the_numbers():
    def run(mse, diverged=False):
        out = {
            "test_mse": mse,
            "test_mse_per_seed": [mse, mse],
            "solved_fraction": float(mse < 0.01),
        }
        return {**out, "diverged": "non-finite grad_norm"} if diverged else out

    table = {
        "lstm": {"25": run(0.001), "50": run(0.002), "100": run(0.15)},
        "irnn": {"25": run(0.16), "50": run(0.17), "100": run(np.nan, diverged=True)},
    }
    finding = vg.finding_adding(table)
    assert "lstm T ≤ 50" in finding and "irnn none" in finding
    assert "at T = 100: no cell" in finding and "irnn T = 100" in finding
    assert vg._solved(table["irnn"]["100"]) == "0/2 (diverged)"
    ranked = vg.finding_ablation({"a": run(0.2), "b": run(0.005)}, 50)
    assert ranked.index("b 0.005 (100% solved)") < ranked.index("a 0.2 (0% solved)")


# config


@pytest.mark.parametrize(
    "field, value",
    [
        ("steps", 0),
        ("cells", "nope"),
        ("cells", "elman@x"),
        ("cells", "elman@-1"),
        ("cells", "lru@0.5"),  # lru has no w_h_init
        ("ablation_cells", "lstm,lstm"),
        ("seq_lens", "1,8"),
        ("seq_lens", "8,x"),
        ("explode_radii", "0.5"),
        ("decay_len", 1),
        ("track_every", 0),
        ("explode_optimizer", "bogus"),
    ],
)
def test_bad_config_values_are_rejected_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        vg.main(dataclasses.replace(TINY, **{field: value}, out_dir="/nonexistent/never"))


def test_unknown_flag_exits():
    with pytest.raises(SystemExit):
        cli.parse(vg.Config, ["--bogus=1"])


def test_quick_replaces_only_the_fields_left_at_their_defaults():
    config = vg.resolve(vg.Config(quick=True, steps=7))
    assert config.steps == 7 and config.num_seeds == vg.QUICK["num_seeds"]
    assert config.cells == vg.QUICK["cells"]


@pytest.mark.slow
def test_quick_mode(tmp_path):
    results = vg.main(vg.Config(quick=True, out_dir=str(tmp_path)))
    assert set(results["decay_rate_per_step"]) == set(vg.QUICK["cells"].split(","))
    for name in ("report.md", "results.json", *vg.PLOTS):
        assert (tmp_path / name).exists()
