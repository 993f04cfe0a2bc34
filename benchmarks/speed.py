"""One recurrent layer, float32: jaxseq vs Flax, Haiku, Equinox and PyTorch, side by side.

For each cell (LSTM, GRU), mode and shape (T, B, D, H):
  forward: `ys` for the whole sequence (PyTorch under `torch.no_grad()`);
  train:   forward + BPTT to every parameter, loss = Σ ys² (value and gradient).
Implementations: `jaxseq.unroll(jaxseq.lstm(H) / jaxseq.gru(H), params, xs, **kwargs)`
for each entry of `JAXSEQ_VARIANTS` (`jaxseq`: the default, on a CPU the fused
native kernel of `jaxseq.native`; `jaxseq-xla`: XLA's scan with the sequence-level
VJP; `jaxseq-autodiff`: XLA's scan differentiated step by step); Flax
`nn.RNN(nn.OptimizedLSTMCell / nn.GRUCell,
time_major=True)`; Haiku `hk.dynamic_unroll(hk.LSTM / hk.GRU)` and Equinox
`eqx.nn.LSTMCell / GRUCell` under `lax.scan` + `vmap` (each only where installed);
PyTorch `nn.LSTM / nn.GRU` on the CPU with `torch.set_num_threads(2)`.

Each implementation runs in its own process (PyTorch's spinning OpenMP threads
stall a JAX process beside them; PERF_NOTES.md, lesson 1), and the processes take
turns: for each shape, every implementation's worker is started once (compiled and
warmed up), then for `--rounds` rounds each task (cell × mode) is timed for
`--settle` + `--steps` calls by every implementation in turn, back to back, in an
order that rotates from round to round, with a `--gap_ms` pause after each turn so
that the last process's spinning threads are asleep. The `--settle` calls that open
a turn (default 1) are timed apart from the rest: a process that has sat idle for
seconds while the others took their turns pays in its first call for whatever its
memory lost meanwhile. On the development VM that is mostly the host taking back
freed memory (virtio-balloon free page reporting, after ~2 s), so that the first
call's freshly mapped buffers are faulted in by the host as well: 45-105 ms more
in a jaxseq LSTM train step at D (README, "Speed"). A training loop's back-to-back
steps do not pay it.
Turns of one task are seconds apart at most, so a ratio taken within a round sees
one state of the shared machine, and many short rounds spread its drift evenly over
every implementation. A `matmul` worker takes a turn at the start of every round
and measures this machine's dense float32 rate (2048² @ 2048², JAX), then its peak
float32 FMA rate (`jaxseq.native.fma_probe` on every kernel thread at once, as many
FLOPs as the matmul; skipped where the native kernels cannot run).
Reported per (cell, mode, shape, impl), over all rounds' timed steps:
  median and fastest ms per step; the median of the turns' settle calls;
  compile s: `jax.jit(f).lower(...).compile()`;
  peak memory: temp + argument + output − alias bytes of
    `compiled.memory_analysis()` (JAX only; None for PyTorch). The native
    kernel's own scratch (weights packed per thread, ≈ 4·(D+H)·G·H bytes per
    thread, and one tile per thread) is outside XLA's buffers and not counted;
  GFLOP/s from the analytic count: forward ≈ 2·T·B·(D+H)·G·H (G = 4 for LSTM,
    3 for GRU; elementwise work ignored), train step ≈ 3× forward;
  % of the matmul rate measured in the same run, and paired
    (`matmul_fraction_paired`: median and middle half over rounds of each turn's
    GFLOP/s over the rate of the matmul turn that opened its round); and
    `peak_fraction`, GFLOP/s over the median peak FMA rate;
  speedup vs the fastest anchor (the fastest non-jaxseq implementation in the
    same run): its median ÷ this median, so > 1 means faster than every anchor;
    and the same ratio within each round (`speedup_per_round`), summarised as
    its median and middle half (25th–75th percentile) over the rounds.
`--remat_T=N` adds two reports on the jaxseq LSTM train step at T = N
(`--remat_shape` B,D,H), one with the loss over every output (Σ ys²) and one
with the loss on the final state (Σ h_T²): `remat=False` (unroll's default BPTT)
vs `remat=True`, peak memory of each, the ratio, and the max |Δ| of the loss and
of the gradients. Over every output, both forms also hold ys and its cotangent.

    .venv/bin/python -m benchmarks.speed                                # A–D, 10 rounds of 4
    .venv/bin/python -m benchmarks.speed --shapes=A,B,C,D --rounds=20 --steps=3
    .venv/bin/python -m benchmarks.speed --shapes=A --cells=lstm --modes=train --impls=jaxseq,torch
    .venv/bin/python -m benchmarks.speed --shapes=none --remat_T=10000  # the remat report only
    .venv/bin/python -m benchmarks.speed --malloc_thresholds            # glibc tuned (lesson 3)
    .venv/bin/python -m benchmarks.speed --tiny --out_dir=/tmp/speed    # CI smoke (~30 s)

Appends JSON lines to benchmarks/results/speed-<device>.jsonl, the full log (one per
worker turn with every call's time, one summary per row, the remat reports), and
the same without the per-turn lines to speed-<device>-summaries.jsonl (the small
file kept in git); overwrites the markdown table in speed-<device>.md (shown in
README). `--tiny` writes files only where `--out_dir` says. Prints the table.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import _speed_workers as workers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = {  # (T, B, D, H), as in PERF_NOTES.md
    "A": (100, 32, 32, 128),
    "B": (100, 64, 128, 256),
    "C": (1000, 16, 8, 64),
    "D": (50, 256, 256, 512),
    "tiny": (5, 2, 3, 4),
}
# Extra keyword arguments of `jaxseq.unroll`, one line per variant, selected by name in
# --impls (e.g. `"jaxseq-autodiff": {"bptt": "autodiff"},`). A variant whose kwargs
# `unroll` rejects with a TypeError is skipped with its message, not run.
JAXSEQ_VARIANTS = {
    "jaxseq": {},  # on a CPU: the fused native kernel (jaxseq.native) where it applies
    "jaxseq-xla": {"kernel": "xla"},  # XLA's scan with the sequence-level VJP (jaxseq.bptt)
    "jaxseq-autodiff": {"bptt": "autodiff"},  # XLA's scan, differentiated step by step
}
ANCHORS = {"flax": "flax", "haiku": "haiku", "equinox": "equinox", "torch": "torch"}
TINY = dict(shapes="tiny", rounds=2, steps=2, warmup=1, matmul_size=128, gap_ms=1)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="A,B,C,D", help="keys of SHAPES, or 'none'")
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--modes", default="forward,train")
    parser.add_argument("--impls", default=",".join([*JAXSEQ_VARIANTS, *ANCHORS]))
    parser.add_argument("--rounds", type=int, default=10, help="turns each task takes")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per turn")
    parser.add_argument(
        "--settle",
        type=int,
        default=1,
        help="calls at the start of each turn timed apart from --steps (0: none; see Speed)",
    )
    parser.add_argument(
        "--gap_ms", type=float, default=50, help="pause after each turn (spinning threads park)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (≥ 1)")
    parser.add_argument("--matmul_size", type=int, default=2048)
    parser.add_argument("--torch_threads", type=int, default=2)
    parser.add_argument("--remat_T", type=int, default=0, help="remat report at this T; 0: off")
    parser.add_argument("--remat_shape", default="8,8,64", help="B,D,H of the remat report")
    parser.add_argument("--out_dir", default=None, help="default benchmarks/results (not --tiny)")
    parser.add_argument(
        "--malloc_thresholds",
        action="store_true",
        help="glibc keeps freed memory in the workers: mmap/trim thresholds raised, one "
        "arena (KEEP_FREED_MEMORY; PERF_NOTES.md, lesson 3)",
    )
    parser.add_argument("--tiny", action="store_true", help="T=5 B=2 D=3 H=4, 1 round, 2 steps")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        parser.set_defaults(**TINY)
        args = parser.parse_args(argv)
    for name in ("rounds", "steps", "warmup", "matmul_size", "torch_threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be ≥ 1, got {getattr(args, name)}")
    if args.settle < 0:
        raise ValueError(f"--settle must be ≥ 0, got {args.settle}")
    if not args.gap_ms >= 0:
        raise ValueError(f"--gap_ms must be ≥ 0, got {args.gap_ms}")
    choices = dict(shapes=[*SHAPES], cells=[*workers.GATES], modes=["forward", "train"])
    for option, allowed in (choices | dict(impls=[*JAXSEQ_VARIANTS, *ANCHORS])).items():
        for name in _names(getattr(args, option)):
            if name not in allowed:
                raise ValueError(
                    f"--{option}: expected a comma-separated subset of {allowed}, got {name!r}"
                )
    return args


def _names(text: str) -> list[str]:
    return [name for name in text.split(",") if name and name != "none"]


def worker(args) -> None:
    """The worker process: prepares its tasks, then serves turns (remat: answers once)."""
    impl, shape_name = args.worker
    replies = workers.protocol_stream()
    if impl == "remat":
        replies.write(json.dumps(workers.remat_turn(args)) + "\n")
        replies.flush()
        return
    family = "jaxseq" if impl in JAXSEQ_VARIANTS else ANCHORS.get(impl, impl)
    shape = SHAPES.get(shape_name)
    kwargs = JAXSEQ_VARIANTS.get(impl, {})
    records, runs = workers.prepare(impl, family, shape_name, shape, args, kwargs)
    workers.serve(records, runs, sys.stdin, replies)


class WorkerFailed(RuntimeError):
    """A worker process exited or answered out of protocol; the message ends with its stderr."""


class Worker:
    """One implementation at one shape in its own process: compiled once, timed on request.

    Starting it waits until the worker has compiled and warmed up every task, and
    `records` holds one record per task (compile time, memory; "skipped" where the
    task cannot run). `time(i, steps)` has it run `steps` timed calls of task `i`.
    """

    def __init__(self, impl: str, shape: str, argv: list[str], env: dict, cmd=None):
        self.impl, self.shape = impl, shape
        cmd = cmd or [sys.executable, "-m", "benchmarks.speed", *argv, "--worker", impl, shape]
        self._log = tempfile.TemporaryFile("w+")  # stderr: a pipe could fill up and block it
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            text=True, cwd=ROOT, env=env,
        )  # fmt: skip
        try:
            self.records = self._reply()
        except WorkerFailed:
            self._log.close()
            raise

    def _reply(self):
        line = self._proc.stdout.readline()
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            try:  # a worker that failed is exiting; one that went off protocol is stopped
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._log.seek(0)
            tail = self._log.read().strip()[-3000:]
            raise WorkerFailed(
                f"worker {self.impl} at {self.shape} (exit status {self._proc.returncode}) "
                f"answered {line[:200]!r}; its stderr ends:\n{tail}"
            ) from None

    def time(self, task: int, steps: int, settle: int = 0) -> dict:
        """`settle` calls of task `task` (settle_ms), then `steps` timed calls: times_ms,
        median_ms, loadavg_1min."""
        try:
            self._proc.stdin.write(json.dumps(dict(task=task, steps=steps, settle=settle)) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # the reply (none) raises WorkerFailed with the worker's stderr
        return self._reply()

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()


def _error(impl: str, shape: str, error: Exception) -> dict:
    print(error, file=sys.stderr)
    return dict(kind="error", impl=impl, shape=shape, error=str(error)[-3000:])


def _start(impls: list[str], shape: str, argv: list[str], env: dict, records: list[dict]):
    """Starts each implementation's worker at `shape`, one after another (no compile
    overlaps another's timing); failures and skipped tasks go into `records`."""
    pool = []
    for impl in impls:
        try:
            worker_ = Worker(impl, shape, argv, env)
        except WorkerFailed as error:
            records.append(_error(impl, shape, error))
            continue
        for record in worker_.records:
            if "skipped" in record:
                records.append(record | dict(kind="skipped"))
                task = f"{record['cell']} {record['mode']}" if "cell" in record else record["kind"]
                print(f"skipping {impl} {task}: {record['skipped']}")
        pool.append(worker_)
    return pool


def _turn(worker_: Worker, task: int, round_: int, args) -> dict:
    """One timed turn of one task; then a pause, so that the spinning threads of the
    process that just ran (OpenMP, Eigen) are asleep before the next one starts."""
    try:
        reply = worker_.time(task, args.steps, args.settle)
        result = worker_.records[task] | reply | dict(round=round_)
    finally:
        time.sleep(args.gap_ms / 1e3)
    if result["kind"] in ("matmul", "fma_peak"):
        result |= workers.matmul_rate(result)
    return result


# glibc settings under which a process keeps the memory it frees: no block is mapped
# afresh and unmapped (thresholds above any buffer here), and one arena, since an
# arena of another thread still maps a block larger than its heap (64 MiB) afresh
# whatever the threshold; XLA's temporary buffer is allocated on its own threads.
KEEP_FREED_MEMORY = {
    "MALLOC_MMAP_THRESHOLD_": "1000000000",
    "MALLOC_TRIM_THRESHOLD_": "1000000000",
    "MALLOC_ARENA_MAX": "1",
}


def _take_turns(args, argv: list[str]) -> list[dict]:
    """Paired turns: for each shape, every implementation's worker is started once; then
    in each round the matmul takes a turn, and for each task (cell × mode) every
    implementation takes a turn of `--settle` + `--steps` calls, back to back, in an
    order that rotates from round to round."""
    env = dict(os.environ) | (KEEP_FREED_MEMORY if args.malloc_thresholds else {})
    records, impls = [], []
    for impl in _names(args.impls):
        module = "jaxseq" if impl in JAXSEQ_VARIANTS else ANCHORS[impl]
        if importlib.util.find_spec(module) is None:
            records.append(dict(kind="skipped", impl=impl, skipped=f"{module} is not installed"))
            print(f"skipping {impl}: {module} is not installed")
        else:
            impls.append(impl)
    shapes = _names(args.shapes)
    matmul = _start(["matmul"], "-", argv, env, records) if shapes else []
    for shape in shapes:
        pool = _start(impls, shape, argv, env, records)
        for round_ in range(args.rounds):
            for worker_ in list(matmul):  # the machine's rates, then every task
                try:
                    for task, record in enumerate(worker_.records):  # matmul, FMA peak
                        if "skipped" not in record:
                            records.append(_turn(worker_, task, round_, args) | dict(shape=shape))
                except WorkerFailed as error:
                    records.append(_error("matmul", shape, error))
                    matmul.remove(worker_)
            for task in range(max((len(w.records) for w in pool), default=0)):
                shift = round_ % max(len(pool), 1)
                for worker_ in pool[shift:] + pool[:shift]:
                    if "skipped" in worker_.records[task]:
                        continue
                    try:
                        records.append(_turn(worker_, task, round_, args))
                    except WorkerFailed as error:
                        records.append(_error(worker_.impl, shape, error))
                        pool.remove(worker_)
                        worker_.close()
        for worker_ in pool:
            worker_.close()
    for worker_ in matmul:
        worker_.close()
    if args.remat_T:
        records += _one_shot("remat", argv, env)
    return records


def _one_shot(impl: str, argv: list[str], env: dict) -> list[dict]:
    """Runs a worker that answers once (the remat report) and returns its records."""
    try:
        worker_ = Worker(impl, "-", argv, env)
    except WorkerFailed as error:
        return [_error(impl, "-", error)]
    worker_.close()
    return worker_.records


def summarise(records: list[dict]) -> list[dict]:
    """One summary per (cell, mode, shape, impl), pooling the timed steps of every round."""
    rates = [r["gflops"] for r in records if r["kind"] == "matmul"]
    matmul_gflops = statistics.median(rates) if rates else None
    peaks = [r["gflops"] for r in records if r["kind"] == "fma_peak" and "gflops" in r]
    fma_peak_gflops = statistics.median(peaks) if peaks else None
    # the matmul turn that opened each (shape, round): the rate a turn is paired with
    round_rates = {
        (r.get("shape"), r.get("round")): r["gflops"] for r in records if r["kind"] == "matmul"
    }
    groups = {}
    for r in records:
        if r["kind"] == "turn":
            groups.setdefault((r["cell"], r["mode"], r["shape"], r["impl"]), []).append(r)
    summaries = []
    for (cell, mode, shape, impl), turns in groups.items():
        times = [t for r in turns for t in r["times_ms"]]
        median = statistics.median(times)
        settles = [t for r in turns for t in r.get("settle_ms", [])]
        gflops = turns[0]["flops"] / (median * 1e6)
        compiles = [r["compile_s"] for r in turns if r["compile_s"] is not None]
        summaries.append(
            {k: turns[0][k] for k in ("cell", "mode", "shape", "impl", "T", "B", "D", "H")}
            | dict(kind="summary", median_ms=median, min_ms=min(times), max_ms=max(times))
            | dict(steps=len(times))
            | dict(settle_median_ms=statistics.median(settles) if settles else None)
            | dict(per_round_median_ms=[r["median_ms"] for r in turns], rounds=len(turns))
            | dict(round_ids=[r.get("round") for r in turns])
            | dict(compile_s=statistics.median(compiles) if compiles else None)
            | dict(peak_bytes=turns[0]["peak_bytes"], gflops=gflops)
            | dict(matmul_gflops=matmul_gflops)
            | dict(matmul_fraction=gflops / matmul_gflops if matmul_gflops else None)
            | dict(fma_peak_gflops=fma_peak_gflops)
            | dict(peak_fraction=gflops / fma_peak_gflops if fma_peak_gflops else None)
            | dict(
                matmul_fraction_paired=_spread(
                    [
                        turns[0]["flops"] / (r["median_ms"] * 1e6) / round_rates[key]
                        for r in turns
                        if (key := (shape, r.get("round"))) in round_rates
                    ]
                )
            )
        )
    for s in summaries:
        anchors = [
            o
            for o in summaries
            if (o["cell"], o["mode"], o["shape"]) == (s["cell"], s["mode"], s["shape"])
            and o["impl"] not in JAXSEQ_VARIANTS
        ]
        best = min(anchors, key=lambda o: o["median_ms"]) if anchors else None
        s["fastest_anchor"] = best and best["impl"]
        s["speedup_vs_fastest_anchor"] = best and best["median_ms"] / s["median_ms"]
        # the same ratio within each round both ran in (they took turns minutes apart
        # at most), whose spread shows how much of a difference the machine's drift makes
        if best:
            mine = dict(zip(s["round_ids"], s["per_round_median_ms"]))
            theirs = dict(zip(best["round_ids"], best["per_round_median_ms"]))
            s["speedup_per_round"] = [theirs[r] / mine[r] for r in mine if r in theirs]
        else:
            s["speedup_per_round"] = None
        s["speedup_paired"] = _spread(s["speedup_per_round"])
    order = {name: i for i, name in enumerate([*workers.GATES, "forward", "train", *SHAPES])}
    return sorted(summaries, key=lambda s: (order[s["cell"]], order[s["mode"]], order[s["shape"]]))


def _spread(values: list[float] | None) -> dict | None:
    """Median and middle half (25th–75th percentile, inclusive) of two or more values."""
    if not values or len(values) < 2:
        return None
    low, median, high = statistics.quantiles(values, n=4, method="inclusive")
    return dict(median=median, q1=low, q3=high, n=len(values))


def _fraction(summary: dict) -> str:
    """% of the matmul rate: pooled medians, and the median over rounds of each turn's
    rate over its own round's matmul rate (the two are seconds apart)."""
    text = _fmt(summary["matmul_fraction"], ".0f", 100)
    paired = summary.get("matmul_fraction_paired")
    return text + (f" (paired {100 * paired['median']:.0f})" if paired else "")


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "—" if value is None else format(value * scale, spec)


def _conditions(records: list[dict], command: str) -> list[str]:
    """The markdown header: command, date, versions, load, and the measured matmul rate."""
    jax_info = next((r for r in records if r.get("jax")), {})
    versions = {r["impl"]: r["version"] for r in records if r["kind"] == "turn"}
    loads = [r["loadavg_1min"] for r in records if "loadavg_1min" in r]
    matmuls = [r for r in records if r["kind"] == "matmul"]
    text = f"`{command}`, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, "
    text += ", ".join(f"{k} {v}" for k, v in ({"jax": jax_info.get("jax")} | versions).items())
    if loads:
        text += f"; 1-min load average at turns {min(loads):.1f}–{max(loads):.1f}"
    lines = [
        f"# Speed: one recurrent layer, float32, {jax_info.get('device', '?')}",
        "",
        text + ".",
    ]
    if matmuls:
        size = matmuls[0]["matmul_size"]
        lines.append(f"Dense float32 matmul ({size}², JAX): {_rates(matmuls)}.")
    peaks = [r for r in records if r["kind"] == "fma_peak" and "gflops" in r]
    if peaks:
        text = (
            f"Peak float32 FMA rate (`jaxseq.native.fma_probe`, registers only, "
            f"{peaks[0]['threads']} threads, {peaks[0]['isa']}): {_rates(peaks)}"
        )
        if matmuls:
            share = statistics.median(r["gflops"] for r in matmuls) / statistics.median(
                r["gflops"] for r in peaks
            )
            text += f"; the matmul's median is {100 * share:.0f}% of it"
        lines.append(text + ".")
    return lines


def _rates(turns: list[dict]) -> str:
    """Median GFLOP/s of rate turns (matmul, FMA peak), their count and range."""
    rates = [r["gflops"] for r in turns]
    return (
        f"{statistics.median(rates):.0f} GFLOP/s (median of {len(rates)} turns, "
        f"{min(rates):.0f}–{max(rates):.0f})"
    )


def markdown(records: list[dict], summaries: list[dict], command: str) -> str:
    """The results as markdown: the conditions, the table, skips and errors, remat reports."""
    lines = _conditions(records, command) + [
        "",
        "| cell | mode | shape (T, B, D, H) | impl | median ms | fastest ms | turn's 1st call ms "
        "| compile s | peak MiB | GFLOP/s | % matmul | speedup vs fastest anchor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        speedup, paired = s["speedup_vs_fastest_anchor"], s["speedup_paired"]
        speedup = "—" if speedup is None else f"{speedup:.2f}× ({s['fastest_anchor']})"
        if paired and s["impl"] != s["fastest_anchor"]:
            speedup += f"; paired {paired['median']:.2f} ({paired['q1']:.2f}–{paired['q3']:.2f})"
        lines.append(
            f"| {s['cell']} | {s['mode']} | {s['shape']} ({s['T']}, {s['B']}, {s['D']}, {s['H']}) "
            f"| {s['impl']} | {s['median_ms']:.2f} | {s['min_ms']:.2f} "
            f"| {_fmt(s.get('settle_median_ms'), '.2f')} "
            f"| {_fmt(s['compile_s'], '.2f')} | {workers.mib(s['peak_bytes'])} "
            f"| {s['gflops']:.1f} | {_fraction(s)} | {speedup} |"
        )
    lines += [
        "",
        "Median and fastest over all rounds' timed steps. Turn's 1st call: the median of "
        "the `--settle` calls that open each turn, timed apart and left out of the other "
        "columns (— where none). Peak memory: temp + argument + "
        "output − alias bytes of `compiled.memory_analysis()` (— for PyTorch). GFLOP/s: "
        "forward 2·T·B·(D+H)·G·H (G = 4 LSTM, 3 GRU), train 3× forward. Speedup: the fastest "
        "non-jaxseq implementation's median ÷ this median (> 1: faster than every anchor); "
        "paired: the median over rounds of that ratio taken within one round (the two "
        "turns back to back), and in brackets the middle half (25th–75th percentile). "
        "% matmul: GFLOP/s at the median over the matmul's median rate; paired: the "
        "median over rounds of each turn's rate over that of the matmul turn which opened "
        "its round.",
    ]
    notes = {(r["kind"], r["impl"], r.get("skipped") or r.get("error")): 0 for r in records}
    lines += [f"\n{k}: {impl}: {why}" for k, impl, why in notes if k in ("skipped", "error")]
    for report in (r for r in records if r["kind"] == "remat"):
        lines += workers.remat_markdown(report)
    return "\n".join(lines) + "\n"


def _write(out_dir: str, records: list[dict], text: str) -> None:
    """Appends the full log and the summaries, overwrites the markdown; named after the device."""
    device = next((r["device"] for r in records if r.get("jax")), "cpu")
    slug = "".join(c if c.isalnum() else "-" for c in device.lower()).strip("-")
    os.makedirs(out_dir, exist_ok=True)
    logs = {"": records, "-summaries": [r for r in records if r["kind"] != "turn"]}
    for suffix, lines in logs.items():
        with open(os.path.join(out_dir, f"speed-{slug}{suffix}.jsonl"), "a") as f:
            for record in lines:
                f.write(json.dumps(record) + "\n")
    with open(os.path.join(out_dir, f"speed-{slug}.md"), "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the turns, writes and prints the results; returns every record written."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return []
    command = "python -m benchmarks.speed " + " ".join(argv)
    records = _take_turns(args, argv)
    summaries = summarise(records)
    run = dict(run_id=time.strftime("%Y-%m-%dT%H:%M:%S"), command=command)
    records = [run | r for r in records + summaries]
    text = markdown(records, summaries, command)
    out_dir = args.out_dir or (None if args.tiny else os.path.join(ROOT, "benchmarks", "results"))
    if out_dir:
        _write(out_dir, records, text)
    print(text)
    if any(r["kind"] == "error" for r in records):
        sys.exit(1)
    return records


if __name__ == "__main__":
    main()
