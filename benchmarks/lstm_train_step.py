"""Side-by-side LSTM train-step timings: jaxseq vs PyTorch nn.LSTM vs Flax nn.RNN.

Train step = forward over the sequence + BPTT to every parameter, loss = sum of
squares of the outputs, float32, one layer. Each implementation runs in its own
process (PyTorch's OpenMP threads spin-wait and stall a JAX process beside
them), and the processes take turns for `--rounds` rounds, so every
implementation sees the same machine conditions. Reported: compile time (JAX),
median and fastest ms per step, and each median as a ratio to PyTorch's.

    .venv/bin/python -m benchmarks.lstm_train_step                      # shapes A and C
    .venv/bin/python -m benchmarks.lstm_train_step --shapes=A,B,C,D --rounds=3
    .venv/bin/python -m benchmarks.lstm_train_step --malloc_thresholds   # glibc tuned

Writes JSON lines to benchmarks/results/lstm_train_step.jsonl and prints a table.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

SHAPES = {  # (T, B, D, H), as in PERF_NOTES.md
    "A": (100, 32, 32, 128),
    "B": (100, 64, 128, 256),
    "C": (1000, 16, 8, 64),
    "D": (50, 256, 256, 512),
}
IMPLEMENTATIONS = ("jaxseq", "flax", "torch")


def _time(fn, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return times


def _jax_step(impl: str, shape):
    import jax
    import jax.numpy as jnp

    t, b, d, h = shape
    xs = jax.random.normal(jax.random.key(0), (t, b, d))
    if impl == "jaxseq":
        import jaxseq

        cell = jaxseq.lstm(h)
        params = cell.init(jax.random.key(1), d)

        def loss(params, xs):
            return jnp.sum(jaxseq.unroll(cell, params, xs)[1] ** 2)
    else:
        import flax.linen as nn

        model = nn.RNN(nn.OptimizedLSTMCell(h), time_major=True)
        params = model.init(jax.random.key(1), xs)

        def loss(params, xs):
            return jnp.sum(model.apply(params, xs) ** 2)

    grad = jax.jit(jax.grad(loss))
    start = time.perf_counter()
    compiled = grad.lower(params, xs).compile()
    compile_s = time.perf_counter() - start
    return (lambda: jax.block_until_ready(compiled(params, xs))), compile_s, jax.__version__


def _torch_step(shape):
    import torch

    t, b, d, h = shape
    torch.manual_seed(0)
    model = torch.nn.LSTM(d, h)
    xs = torch.randn(t, b, d)

    def step():
        model.zero_grad()
        ys, _ = model(xs)
        (ys**2).sum().backward()

    return step, 0.0, torch.__version__


def worker(impl: str, shape_name: str, steps: int) -> dict:
    shape = SHAPES[shape_name]
    if impl == "torch":
        step, compile_s, version = _torch_step(shape)
    else:
        step, compile_s, version = _jax_step(impl, shape)
    _time(step, 3)  # warm-up
    times = _time(step, steps)
    return {
        "impl": impl,
        "shape": shape_name,
        "T_B_D_H": shape,
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "compile_s": compile_s,
        "steps": steps,
        "version": version,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="A,C", help="comma-separated keys of SHAPES")
    parser.add_argument("--impls", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--rounds", type=int, default=2, help="turns each implementation takes")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per turn")
    parser.add_argument("--out", default="benchmarks/results/lstm_train_step.jsonl")
    parser.add_argument(
        "--malloc_thresholds",
        action="store_true",
        help="raise glibc's mmap/trim thresholds in the workers (PERF_NOTES.md, lesson 3)",
    )
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps)))
        return
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    env = dict(os.environ)
    if args.malloc_thresholds:
        env |= {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "1000000000"}
    records = []
    for shape in args.shapes.split(","):
        for round_ in range(args.rounds):
            for impl in args.impls.split(","):
                cmd = [
                    sys.executable,
                    "-m",
                    "benchmarks.lstm_train_step",
                    "--steps",
                    str(args.steps),
                    "--worker",
                    impl,
                    shape,
                ]
                out = subprocess.run(
                    cmd, check=True, capture_output=True, text=True, env=env
                ).stdout
                record = json.loads(out.strip().splitlines()[-1]) | {
                    "round": round_,
                    "malloc_thresholds": args.malloc_thresholds,
                }
                records.append(record)
                with open(args.out, "a") as f:
                    f.write(json.dumps(record) + "\n")
    _print_table(records)


def _print_table(records: list[dict]) -> None:
    print("| shape (T,B,D,H) | impl | median ms (per round) | fastest ms | × PyTorch (median) |")
    print("|---|---|---|---|---|")
    for shape in dict.fromkeys(r["shape"] for r in records):
        rows = [r for r in records if r["shape"] == shape]
        torch_med = statistics.median([r["median_ms"] for r in rows if r["impl"] == "torch"] or [0])
        for impl in dict.fromkeys(r["impl"] for r in rows):
            mine = [r for r in rows if r["impl"] == impl]
            med = statistics.median(r["median_ms"] for r in mine)
            ratio = f"{med / torch_med:.2f}" if torch_med else "—"
            per_round = " / ".join(f"{r['median_ms']:.1f}" for r in mine)
            best = min(r["min_ms"] for r in mine)
            print(
                f"| {shape} {tuple(mine[0]['T_B_D_H'])} | {impl} | {per_round} | {best:.1f} "
                f"| {ratio} |"
            )


if __name__ == "__main__":
    main()
