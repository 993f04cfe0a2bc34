"""benchmarks.speed end to end at `--tiny` shapes, in a subprocess (no timing assertions).

One module-scoped smoke run (every cell and mode; jaxseq, Flax and PyTorch; the
matmul worker; 2 rounds; the remat report at T = 12) writes into a temporary
folder; the tests read what it wrote. The FLOP count is checked against its formula written
out here, and the remat report's gradients against each other.
"""

import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import time

import pytest

from benchmarks import _speed_workers, speed
from jaxseq import native

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NATIVE = native.status()[0]  # the peak FMA rate needs the native kernels
IMPLS = ("jaxseq", "flax", "torch")
SUMMARY_KEYS = {
    "median_ms",
    "min_ms",
    "settle_median_ms",
    "per_round_median_ms",
    "compile_s",
    "peak_bytes",
    "gflops",
    "matmul_fraction",
    "fastest_anchor",
    "speedup_vs_fastest_anchor",
    "speedup_per_round",
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("speed")
    cmd = [sys.executable, "-m", "benchmarks.speed", "--tiny", f"--impls={','.join(IMPLS)}"]
    cmd += ["--remat_T=12", f"--out_dir={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (jsonl,) = out.glob("speed-*[!s].jsonl")
    (summaries,) = out.glob("speed-*-summaries.jsonl")
    (md,) = out.glob("speed-*.md")
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    kept = [json.loads(line) for line in summaries.read_text().splitlines()]
    return dict(stdout=proc.stdout, records=records, kept=kept, markdown=md.read_text())


def _kind(records: list[dict], kind: str) -> list[dict]:
    return [r for r in records if r["kind"] == kind]


def test_one_summary_per_cell_mode_impl(smoke):
    summaries = _kind(smoke["records"], "summary")
    keys = sorted((s["cell"], s["mode"], s["impl"]) for s in summaries)
    assert keys == sorted(
        (c, m, i) for c in ("lstm", "gru") for m in ("forward", "train") for i in IMPLS
    )
    for s in summaries:
        assert SUMMARY_KEYS <= set(s), s
        assert (s["shape"], s["T"], s["B"], s["D"], s["H"]) == ("tiny", 5, 2, 3, 4)
        assert s["steps"] == 4 and s["rounds"] == 2
        assert s["min_ms"] <= s["median_ms"] <= s["max_ms"]


def test_summaries_file_keeps_every_record_but_the_turns(smoke):
    assert smoke["kept"] == [r for r in smoke["records"] if r["kind"] != "turn"]
    kinds = {r["kind"] for r in smoke["kept"]}
    assert kinds == {"summary", "matmul", "remat", "fma_peak" if NATIVE else "skipped"}


def test_gflops_follow_the_analytic_count(smoke):
    for s in _kind(smoke["records"], "summary"):
        gates = {"lstm": 4, "gru": 3}[s["cell"]]
        forward = 2 * s["T"] * s["B"] * (s["D"] + s["H"]) * gates * s["H"]
        count = forward * (1 if s["mode"] == "forward" else 3)
        assert s["gflops"] * s["median_ms"] * 1e6 == pytest.approx(count, rel=1e-9)
        assert s["matmul_fraction"] == pytest.approx(s["gflops"] / s["matmul_gflops"])


def test_compile_time_and_memory_for_jax_only(smoke):
    turns = _kind(smoke["records"], "turn")
    assert len(turns) == 2 * 4 * len(IMPLS)
    for r in turns:
        assert len(r["times_ms"]) == 2 and r["version"] and r["loadavg_1min"] >= 0
        assert len(r["settle_ms"]) == 1  # --settle's default: the turn's first call, apart
        if r["impl"] == "torch":
            assert r["compile_s"] is None and r["peak_bytes"] is None
        else:
            parts = r["temp_bytes"] + r["argument_bytes"] + r["output_bytes"] - r["alias_bytes"]
            assert r["compile_s"] > 0 and r["peak_bytes"] == parts > 0


def test_jaxseq_workers_build_the_native_kernel_before_timing_a_compile(smoke):
    """Its one-time build is in the worker's environment record, not a task's compile_s."""
    from jaxseq import native

    ok, why = native.status()
    for r in _kind(smoke["records"], "turn"):
        if r["impl"].startswith("jaxseq"):
            assert r["native"] == dict(ok=ok, why=why, isa=native.isa())
        else:
            assert "native" not in r


def test_each_worker_compiles_once_and_the_turn_order_rotates(smoke):
    turns = _kind(smoke["records"], "turn")
    for impl in IMPLS:  # the same compiled function serves both rounds
        for task in {(r["cell"], r["mode"]) for r in turns}:
            mine = [r for r in turns if r["impl"] == impl and (r["cell"], r["mode"]) == task]
            assert [r["round"] for r in mine] == [0, 1]
            assert mine[0]["compile_s"] == mine[1]["compile_s"]
            assert mine[0]["first_call_s"] == mine[1]["first_call_s"]
    first_task = [r for r in turns if (r["cell"], r["mode"]) == ("lstm", "forward")]
    assert [r["impl"] for r in first_task] == [*IMPLS, *IMPLS[1:], IMPLS[0]]


def test_worker_serves_one_reply_per_command():
    calls = []
    runs = [lambda: calls.append("a"), lambda: calls.append("b")]
    commands = io.StringIO('{"task": 1, "steps": 3}\n{"task": 0, "steps": 2, "settle": 2}\n')
    replies = io.StringIO()
    _speed_workers.serve([{"kind": "turn"}, {"kind": "turn"}], runs, commands, replies)
    first, *timed = [json.loads(line) for line in replies.getvalue().splitlines()]
    assert first == [{"kind": "turn"}, {"kind": "turn"}] and calls == ["b"] * 3 + ["a"] * 4
    assert [len(t["times_ms"]) for t in timed] == [3, 2]
    assert [len(t["settle_ms"]) for t in timed] == [0, 2]
    assert all(t["median_ms"] >= 0 and t["loadavg_1min"] >= 0 for t in timed)


@pytest.mark.parametrize(
    "script, when",
    [
        ("import sys; print('not json'); sys.stderr.write('boom'); sys.exit(3)", "start"),
        (
            "import sys; print('[]', flush=True); sys.stdin.readline(); sys.stderr.write('boom')",
            "turn",
        ),
    ],
)
def test_a_failed_worker_is_reported_with_its_stderr(script, when):
    start = lambda: speed.Worker("x", "A", [], dict(os.environ), cmd=[sys.executable, "-c", script])  # noqa: E731
    if when == "start":
        with pytest.raises(speed.WorkerFailed, match=r"(?s)worker x at A \(exit status 3\).*boom"):
            start()
        return
    worker = start()
    assert worker.records == []
    with pytest.raises(speed.WorkerFailed, match=r"(?s)exit status 0.*boom"):
        worker.time(0, 1)
    worker.close()


def test_speedup_is_relative_to_the_fastest_anchor(smoke):
    summaries = _kind(smoke["records"], "summary")
    for s in summaries:
        same = [o for o in summaries if (o["cell"], o["mode"]) == (s["cell"], s["mode"])]
        anchor = min((o for o in same if o["impl"] != "jaxseq"), key=lambda o: o["median_ms"])
        assert s["fastest_anchor"] == anchor["impl"]
        assert s["speedup_vs_fastest_anchor"] == pytest.approx(anchor["median_ms"] / s["median_ms"])


def test_per_round_speedup_pairs_each_round():
    """Pure `summarise` on made-up turns: 3 rounds of jaxseq, torch and flax."""
    medians = {"jaxseq": [10.0, 20.0, 12.0], "torch": [15.0, 18.0, 30.0], "flax": [40.0] * 3}
    shape = dict(cell="lstm", mode="train", shape="A", T=1, B=1, D=1, H=8, flops=1e6)
    records = [dict(kind="matmul", impl="matmul", gflops=100.0, matmul_size=64)] + [
        shape
        | dict(kind="turn", impl=impl, round=i, times_ms=[m], median_ms=m)
        | dict(compile_s=None, peak_bytes=None, version="0")
        for impl, ms in medians.items()
        for i, m in enumerate(ms)
    ]
    by_impl = {s["impl"]: s for s in speed.summarise(records)}
    mine = by_impl["jaxseq"]
    assert mine["fastest_anchor"] == "torch"  # pooled median 18 < 40
    assert mine["speedup_vs_fastest_anchor"] == pytest.approx(18.0 / 12.0)
    assert mine["speedup_per_round"] == pytest.approx([1.5, 0.9, 2.5])
    text = speed.markdown(records, list(by_impl.values()), "cmd")
    assert mine["speedup_paired"] == pytest.approx(dict(median=1.5, q1=1.2, q3=2.0, n=3))
    assert "| 1.50× (torch); paired 1.50 (1.20–2.00) |" in text
    assert "| 1.00× (torch) |" in text  # the anchor itself: no range

    # a turn lost in round 1 (a failed worker): rounds pair by number, not position
    records = [r for r in records if not (r.get("impl") == "torch" and r.get("round") == 1)]
    mine = {s["impl"]: s for s in speed.summarise(records)}["jaxseq"]
    assert mine["speedup_per_round"] == pytest.approx([1.5, 2.5])


def test_matmul_rate_measured_in_the_same_run(smoke):
    matmuls = _kind(smoke["records"], "matmul")
    assert [m["round"] for m in matmuls] == [0, 1]
    for m in matmuls:
        assert m["matmul_size"] == 128 and len(m["times_ms"]) == 2
        assert m["gflops"] == pytest.approx(2 * 128**3 / (m["median_ms"] * 1e6))
    assert "Dense float32 matmul (128², JAX)" in smoke["markdown"]
    assert "(median of 2 turns" in smoke["markdown"]


@pytest.mark.skipif(not NATIVE, reason="jaxseq.native cannot run here")
def test_fma_peak_measured_in_the_same_run(smoke):
    """After each round's matmul turn, the peak FMA rate on about as many FLOPs."""
    peaks = _kind(smoke["records"], "fma_peak")
    assert [p["round"] for p in peaks] == [0, 1]
    for p in peaks:
        assert len(p["times_ms"]) == 2 and p["threads"] >= 1 and p["isa"] in ("avx2", "avx512")
        per_round = 2 * 12 * {"avx512": 16, "avx2": 8}[p["isa"]] * p["threads"]
        assert p["flops"] % per_round == 0 and abs(p["flops"] - 2 * 128**3) <= per_round / 2
        assert p["gflops"] == pytest.approx(p["flops"] / (p["median_ms"] * 1e6))
    assert "Peak float32 FMA rate (`jaxseq.native.fma_probe`" in smoke["markdown"]
    for s in _kind(smoke["records"], "summary"):
        assert s["fma_peak_gflops"] > 0
        assert s["peak_fraction"] == pytest.approx(s["gflops"] / s["fma_peak_gflops"])


def test_remat_report_agrees_and_reports_memory(smoke):
    reports = _kind(smoke["records"], "remat")
    assert [r["loss_name"] for r in reports] == ["outputs", "final"]
    for report in reports:
        assert (report["T"], report["B"], report["D"], report["H"]) == (12, 8, 8, 64)
        for name in ("default", "remat"):
            assert report[name]["peak_bytes"] > 0 and report[name]["compile_s"] > 0
        ratio = report["default"]["peak_bytes"] / report["remat"]["peak_bytes"]
        assert report["peak_ratio"] == pytest.approx(ratio)
        assert report["loss_abs_diff"] <= 1e-3 * abs(report["loss"])
        assert 0 <= report["grads_max_rel_diff"] < 1e-4 and report["grads_max_abs_diff"] >= 0
    outputs, final = reports
    assert final["loss"] != outputs["loss"]  # two different losses, not one run twice
    title = "## remat: jaxseq LSTM train step, T = 12, B = 8, D = 8, H = 64, loss "
    assert title + "Σ ys² (every output)" in smoke["markdown"]
    assert title + "Σ h_T² (the final state)" in smoke["markdown"]


def test_markdown_table_is_written_and_printed(smoke):
    rows = [line for line in smoke["markdown"].splitlines() if line.startswith("| lstm |")]
    assert len(rows) == 2 * len(IMPLS)
    assert all(line.count("|") == 13 for line in rows)
    assert "| cell | mode | shape (T, B, D, H) | impl | median ms |" in smoke["markdown"]
    assert smoke["markdown"].strip() in smoke["stdout"]


def test_missing_libraries_are_skipped_with_a_message():
    args = speed.parse_args(["--impls=haiku,equinox", "--shapes=none"])
    records = speed._take_turns(args, [])
    skipped = {r["impl"]: r["skipped"] for r in records if r["kind"] == "skipped"}
    for impl in ("haiku", "equinox"):
        if importlib.util.find_spec(impl) is None:
            assert skipped[impl] == f"{impl} is not installed"
        else:
            assert impl not in skipped


def test_variant_with_kwargs_unroll_rejects_is_skipped():
    options = dict(warmup=1, steps=1, kwargs={"no_such_option": 1})
    ((result, run),) = _speed_workers.jax_tasks(
        "jaxseq-bad", "jaxseq", "gru", ["forward"], (2, 1, 2, 2), options
    )
    assert "unroll rejected" in result["skipped"] and "no_such_option" in result["skipped"]
    assert run is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--shapes=E"],
        ["--cells=rnn"],
        ["--modes=eval"],
        ["--impls=jax"],
        ["--steps=0"],
        ["--gap_ms=-1"],
        ["--settle=-1"],
    ],
)
def test_bad_arguments_fail_fast(argv):
    with pytest.raises(ValueError, match=argv[0].split("=")[0]):
        speed.parse_args(argv)


def test_layout_and_hoisting_microbenchmarks_run():
    """Tiny shapes; both forms of each compute the same thing (checked inside / by unroll)."""
    from benchmarks import gate_layout, grad_layout, hoisting

    assert set(gate_layout.main(3, 2, 4)) == {"per_slice", "one_block"}
    assert set(hoisting.main(3, 2, 3, 4)) == {"hoisted", "in_step"}
    assert set(grad_layout.main(6, 3, 8)) == {"transposed_operands", "xh_transposed"}


def test_grad_sums_times_each_choice_after_checking_they_agree():
    from benchmarks import grad_sums

    result = grad_sums.main(["--shape=3,2,3,8", "--chunks=1,4", "--rounds=1"])
    assert set(result) == {"xla_products", "kernel_sums_1", "kernel_sums_4"}
    assert all(0 < fastest <= median for fastest, median in result.values())
    result = grad_sums.main(["--shape=3,2,3,8", "--chunks=2", "--rounds=1", "--prefetch=both"])
    assert set(result) == {"xla_products", "kernel_sums_2", "kernel_sums_2_no_prefetch"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cell=rnn"], "--cell takes one of lstm, gru, elman, got 'rnn'"),
        (["--shape=3,2,3"], "--shape takes 4 positive integers separated by commas, got '3,2,3'"),
        (["--chunks=0"], "--chunks takes positive integers separated by commas, got '0'"),
        (["--rounds=0"], "--rounds must be a positive integer, got 0"),
        (["--prefetch=yes"], "--prefetch takes one of on, off, both, got 'yes'"),
    ],
)
def test_grad_sums_names_bad_arguments(argv, message):
    from benchmarks import grad_sums

    with pytest.raises(ValueError, match=re.escape(message)):
        grad_sums.parse_args(argv)


def test_page_faults_counts_the_memory_a_call_maps_afresh():
    """`per_call` on plain Python: 64 MiB allocated and written per call (glibc maps it
    afresh, over its 32 MiB mmap threshold) faults every page in: 16,384 of 4 KiB, or
    at least 30 of 2 MiB where transparent huge pages are always on; a call that
    allocates nothing, none."""
    from benchmarks import page_faults

    fresh = page_faults.per_call(lambda: b"x" * (64 << 20), calls=3, warmup=1)
    idle = page_faults.per_call(lambda: None, calls=3, warmup=1)
    assert fresh["faults_per_call"] >= 30 and idle["faults_per_call"] < 5
    assert fresh["median_ms"] >= fresh["min_ms"] > 0 and fresh["system_ms_per_call"] >= 0


def test_page_faults_reports_each_cell_and_mode(capsys):
    from benchmarks import page_faults

    records = page_faults.main(["--T=2", "--B=2", "--D=3", "--H=8", "--calls=2"])
    assert [(r["cell"], r["mode"]) for r in records] == [
        ("lstm", "forward"),
        ("lstm", "train"),
        ("gru", "forward"),
        ("gru", "train"),
    ]
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == records
    assert all(r["faults_per_call"] >= 0 and r["median_ms"] > 0 for r in records)


@pytest.mark.parametrize("argv", [["--calls=0"], ["--T=0"], ["--cells=rnn"], ["--modes=eval"]])
def test_page_faults_bad_arguments_are_named(argv, capsys):
    from benchmarks import page_faults

    with pytest.raises(SystemExit):
        page_faults.main(argv)
    assert argv[0].split("=")[0] in capsys.readouterr().err


def test_settle_calls_are_timed_apart_from_the_steps():
    """Pure `timed` and `summarise`: a slow first call of each turn stays out of the median."""
    durations = iter([0.03, 0.0, 0.0, 0.0])
    timed = _speed_workers.timed(lambda: time.sleep(next(durations)), steps=3, settle=1)
    assert timed["settle_ms"][0] >= 30 and max(timed["times_ms"]) < 30
    assert len(timed["times_ms"]) == 3 and timed["median_ms"] < 30
    shape = dict(cell="lstm", mode="train", shape="A", T=1, B=1, D=1, H=8, flops=1e6)
    records = [
        shape
        | dict(kind="turn", impl="jaxseq", round=i, times_ms=[2.0, 3.0], median_ms=2.5)
        | dict(settle_ms=[first], compile_s=None, peak_bytes=None, version="0")
        for i, first in enumerate([9.0, 7.0, 8.0])
    ]
    (summary,) = speed.summarise(records)
    assert summary["settle_median_ms"] == 8.0 and summary["median_ms"] == 2.5
    assert summary["max_ms"] == 3.0
    assert "| 2.50 | 2.00 | 8.00 |" in speed.markdown(records, [summary], "cmd")
    for r in records:
        del r["settle_ms"]  # a run without settle calls (--settle=0, or an older log)
    (summary,) = speed.summarise(records)
    assert summary["settle_median_ms"] is None
    assert "| 2.50 | 2.00 | — |" in speed.markdown(records, [summary], "cmd")


def test_matmul_fraction_pairs_each_turn_with_its_rounds_matmul():
    """Pure `summarise`: round r's turn over round r's matmul rate, not the pooled one."""
    shape = dict(cell="lstm", mode="train", shape="A", T=1, B=1, D=1, H=8, flops=1e6)
    rates, medians = [100.0, 50.0, 80.0], [0.02, 0.04, 0.05]  # GFLOP/s; ms: 50, 25, 20 GFLOP/s
    records = [
        dict(kind="matmul", impl="matmul", shape="A", round=i, gflops=g, matmul_size=64)
        for i, g in enumerate(rates)
    ] + [
        shape
        | dict(kind="turn", impl="jaxseq", round=i, times_ms=[m], median_ms=m)
        | dict(compile_s=None, peak_bytes=None, version="0")
        for i, m in enumerate(medians)
    ]
    (summary,) = speed.summarise(records)
    assert summary["matmul_fraction"] == pytest.approx(25.0 / 80.0)  # pooled medians
    paired = summary["matmul_fraction_paired"]  # 0.5, 0.5, 0.25 per round
    assert paired == pytest.approx(dict(median=0.5, q1=0.375, q3=0.5, n=3))
    assert "| 31 (paired 50) |" in speed.markdown(records, [summary], "cmd")
    records = [r for r in records if r["kind"] != "matmul" or r["round"] != 1]
    (summary,) = speed.summarise(records)  # round 1 lost its matmul: paired over 0 and 2
    assert summary["matmul_fraction_paired"]["n"] == 2


@pytest.mark.parametrize("flag", [True, False])
def test_malloc_thresholds_keep_freed_memory_in_every_worker(flag, monkeypatch):
    """`--malloc_thresholds` hands every worker (matmul, each implementation) glibc's
    settings that keep freed memory mapped; without it, the parent's environment."""
    envs = []
    monkeypatch.setattr(
        speed, "_start", lambda impls, shape, argv, env, records: envs.append(env) or []
    )
    for key in speed.KEEP_FREED_MEMORY:
        monkeypatch.delenv(key, raising=False)
    argv = ["--shapes=A", "--impls=jaxseq", "--rounds=1"] + ["--malloc_thresholds"] * flag
    speed._take_turns(speed.parse_args(argv), argv)
    assert len(envs) == 2  # the matmul worker, then shape A's
    for env in envs:
        assert (env.get("MALLOC_ARENA_MAX") == "1") == flag
        assert (env.get("MALLOC_MMAP_THRESHOLD_") == "1000000000") == flag
        assert (env.get("MALLOC_TRIM_THRESHOLD_") == "1000000000") == flag
