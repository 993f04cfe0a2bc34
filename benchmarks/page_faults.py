"""What one call of jaxseq's layer costs the operating system: page faults and system time.

Calls one jitted LSTM or GRU layer (`jaxseq.unroll`, the default kernel: on a CPU
the native one) back to back and reads `getrusage` around each call: the minor page
faults and the system CPU time it took, with its wall time. Memory that a call maps
afresh is faulted in page by page; on the development VM such faults also cost the
host's time (README, "Speed"). A call with T = 1 shows what a call costs beyond its
steps. Prints one JSON line per (cell, mode): medians over the calls after `warmup`.

    .venv/bin/python -m benchmarks.page_faults                       # shape D, T = 1
    .venv/bin/python -m benchmarks.page_faults --T=50 --modes=train  # D's train step
"""

import argparse
import json
import resource
import statistics
import time

import jax
import jax.numpy as jnp

import jaxseq


def per_call(run, calls: int, warmup: int = 5) -> dict:
    """`run()` `warmup` times, then `calls` times, each between two `getrusage` reads:
    `{median_ms, min_ms, faults_per_call, system_ms_per_call}` (medians but min_ms)."""
    for _ in range(warmup):
        run()
    times, faults, system = [], [], []
    for _ in range(calls):
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
        after = resource.getrusage(resource.RUSAGE_SELF)
        faults.append(after.ru_minflt - before.ru_minflt)
        system.append((after.ru_stime - before.ru_stime) * 1e3)
    return dict(
        median_ms=statistics.median(times),
        min_ms=min(times),
        faults_per_call=statistics.median(faults),
        system_ms_per_call=statistics.median(system),
    )


def measure(cell: str, mode: str, shape: tuple[int, int, int, int], calls: int) -> dict:
    """`per_call` of jaxseq's `cell` layer at `shape` = (T, B, D, H), forward or train step."""
    t, b, d, h = shape
    layer = {"lstm": jaxseq.lstm, "gru": jaxseq.gru}[cell](h)
    params = layer.init(jax.random.key(0), input_size=d)
    xs = jax.random.normal(jax.random.key(1), (t, b, d))

    def apply(p, xs):
        return jaxseq.unroll(layer, p, xs)[1]

    if mode == "forward":
        fn = jax.jit(apply)
    else:
        fn = jax.jit(jax.value_and_grad(lambda p, xs: jnp.sum(apply(p, xs) ** 2)))
    return per_call(lambda: jax.block_until_ready(fn(params, xs)), calls)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=1, help="steps per call (default 1)")
    parser.add_argument("--B", type=int, default=256)
    parser.add_argument("--D", type=int, default=256)
    parser.add_argument("--H", type=int, default=512)
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--modes", default="forward,train")
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args(argv)
    for name, value in (("T", args.T), ("B", args.B), ("D", args.D), ("H", args.H)):
        if value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}")
    if args.calls < 1:
        parser.error(f"--calls must be a positive integer, got {args.calls}")
    cells, modes = args.cells.split(","), args.modes.split(",")
    for cell in cells:
        if cell not in ("lstm", "gru"):
            parser.error(f"--cells takes lstm and gru, got {cell!r}")
    for mode in modes:
        if mode not in ("forward", "train"):
            parser.error(f"--modes takes forward and train, got {mode!r}")
    shape = (args.T, args.B, args.D, args.H)
    records = []
    for cell in cells:
        for mode in modes:
            record = dict(cell=cell, mode=mode, T=args.T, B=args.B, D=args.D, H=args.H)
            record |= measure(cell, mode, shape, args.calls)
            print(json.dumps(record), flush=True)
            records.append(record)
    return records


if __name__ == "__main__":
    main()
