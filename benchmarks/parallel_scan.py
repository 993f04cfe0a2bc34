"""Sequential vs parallel-in-time `unroll`, and the LSTM against cuDNN.

For each T: `unroll(method="scan")` vs `method="associative"` (minGRU, LRU) vs
`method="deer"` (GRU, LSTM), forward (`ys`) and forward + gradient (∂Σys²/∂params),
float32; plus the jaxseq LSTM scan vs PyTorch `nn.LSTM` (cuDNN) and
`jax.experimental.rnn.lstm` (cuDNN), both only on a CUDA GPU (reported as
skipped elsewhere). Compile time is measured apart (`jit(f).lower(...).compile()`),
then the median and fastest of `--repeats` calls after `--warmup`, each ended by
`block_until_ready` (PyTorch: `cuda.synchronize`). Each row also records the
largest |Δys| against the scan and, for DEER, the Newton iterations it took.

    .venv/bin/python -m benchmarks.parallel_scan --smoke      # tiny shapes, any device
    python3 -m benchmarks.parallel_scan                        # T = 1k ... 16k, B=16, D=H=32
    python3 -m benchmarks.parallel_scan --lengths=1024,16384 --hidden=128 \
        --variants=mingru:scan,mingru:associative --deer_jacobian=diag

Writes JSON lines to benchmarks/results/parallel_scan-<device>.jsonl (`--out`;
`--smoke` writes only where `--out` says) and prints a markdown table.
"""

import argparse
import functools
import json
import os
import re
import statistics
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory to PyTorch too

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxseq  # noqa: E402
from jaxseq import parallel  # noqa: E402
from jaxseq.cells import lru, mingru  # noqa: E402

CELLS = {"mingru": mingru, "lru": lru, "gru": jaxseq.gru, "lstm": jaxseq.lstm}
VARIANTS = (
    "mingru:scan,mingru:associative,lru:scan,lru:associative,gru:scan,gru:deer,"
    "lstm:scan,lstm:deer,lstm:torch_cudnn,lstm:jax_cudnn"
)
SMOKE = dict(lengths="8", batch=2, input_size=3, hidden=4, repeats=1, warmup=0)


def _time(fn, warmup: int, repeats: int, sync=jax.block_until_ready) -> list[float]:
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(fn())
        times.append(1e3 * (time.perf_counter() - start))
    return times


def _compiled(fn, *args):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _jaxseq_fns(cell_name: str, method: str, args, xs):
    """`(forward, grad)` functions of params for one cell and method, and the DEER report."""
    cell = CELLS[cell_name](args.hidden)
    params = jax.jit(cell.init, static_argnums=1)(jax.random.key(1), args.input_size)
    options = (
        dict(deer_jacobian=args.deer_jacobian, deer_tol=args.deer_tol) if method == "deer" else {}
    )

    def forward(params, xs):
        return jaxseq.unroll(cell, params, xs, method=method, **options)[1]

    def grad(params, xs):
        return jax.grad(lambda p: jnp.sum(forward(p, xs) ** 2))(params)

    info = None
    if method == "deer":  # the iterations `unroll` takes, from a separate report run
        deer = functools.partial(
            parallel.deer, cell, jacobian=args.deer_jacobian, tol=args.deer_tol, fallback=False
        )
        info = {k: v.item() for k, v in jax.jit(deer)(params, xs)[2]._asdict().items()}
    return forward, grad, params, info


def _bench_jaxseq(cell_name: str, method: str, args, xs, reference) -> list[dict]:
    forward, grad, params, info = _jaxseq_fns(cell_name, method, args, xs)
    rows = []
    for mode, fn in (("forward", forward), ("grad", grad)):
        compiled, compile_s = _compiled(fn, params, xs)
        times = _time(lambda c=compiled: c(params, xs), args.warmup, args.repeats)
        row = dict(mode=mode, compile_s=compile_s, times=times, deer=info)
        if mode == "forward":
            ys = np.asarray(compiled(params, xs))
            if method == "scan":
                reference[cell_name] = ys
            if cell_name in reference:
                row["max_abs_diff_vs_scan"] = float(np.abs(ys - reference[cell_name]).max())
        rows.append(row)
    return rows


def _bench_torch(args, xs) -> list[dict]:
    if jax.devices()[0].platform != "gpu":  # not even imported: the comparison is on one GPU
        return [dict(mode="both", skipped="PyTorch's cuDNN LSTM is compared on a CUDA GPU only")]
    try:
        import torch
    except ImportError:
        return [dict(mode="both", skipped="torch is not installed")]
    if not torch.cuda.is_available():
        return [dict(mode="both", skipped=f"torch {torch.__version__} has no CUDA device")]
    torch.manual_seed(0)
    tf32 = args.precision != "highest"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    model = torch.nn.LSTM(args.input_size, args.hidden).cuda()
    x = torch.from_numpy(np.array(xs)).cuda()
    sync = lambda _: torch.cuda.synchronize()  # noqa: E731

    def forward():
        with torch.no_grad():
            return model(x)[0]

    def grad():
        model.zero_grad()
        (model(x)[0] ** 2).sum().backward()

    versions = dict(
        torch=torch.__version__,
        cudnn=torch.backends.cudnn.version(),
        torch_cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
    )
    return [
        dict(mode=mode, compile_s=0.0, times=_time(fn, max(args.warmup, 1), args.repeats, sync))
        | versions
        for mode, fn in (("forward", forward), ("grad", grad))
    ]


def _bench_jax_cudnn(args, xs) -> list[dict]:
    if jax.devices()[0].platform != "gpu":
        return [dict(mode="both", skipped="jax.experimental.rnn needs a CUDA GPU (cuDNN)")]
    from jax.experimental import rnn

    t, b, _ = xs.shape
    weights = rnn.init_lstm_weight(jax.random.key(1), args.input_size, args.hidden, 1, False)
    zeros = jnp.zeros((1, b, args.hidden))
    x_bf, lengths = jnp.swapaxes(xs, 0, 1), jnp.full((b,), t, jnp.int32)

    def forward(weights, x):
        return rnn.lstm(
            x, zeros, zeros, weights, lengths, args.input_size, args.hidden, 1, 0.0, False
        )[0]

    def grad(weights, x):
        return jax.grad(lambda w: jnp.sum(forward(w, x) ** 2))(weights)

    rows = []
    for mode, fn in (("forward", forward), ("grad", grad)):
        compiled, compile_s = _compiled(fn, weights, x_bf)
        times = _time(lambda c=compiled: c(weights, x_bf), args.warmup, args.repeats)
        rows.append(dict(mode=mode, compile_s=compile_s, times=times))
    return rows


def _device() -> tuple[str, str]:
    kind = jax.devices()[0].device_kind
    return kind, re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")


def _records(variant: str, num_steps: int, args, xs, reference) -> list[dict]:
    cell_name, method = variant.split(":")
    if method == "torch_cudnn":
        rows = _bench_torch(args, xs)
    elif method == "jax_cudnn":
        rows = _bench_jax_cudnn(args, xs)
    else:
        rows = _bench_jaxseq(cell_name, method, args, xs, reference)
    kind, _ = _device()
    base = dict(
        cell=cell_name,
        method=method,
        T=num_steps,
        B=args.batch,
        D=args.input_size,
        H=args.hidden,
        device=kind,
        platform=jax.devices()[0].platform,
        jax=jax.__version__,
        jax_matmul_precision=jax.config.jax_default_matmul_precision,
        deer_jacobian=args.deer_jacobian if method == "deer" else None,
    )
    records = []
    for row in rows:
        record = base | {k: v for k, v in row.items() if k != "times"}
        if "times" in row:
            times = row["times"]
            record |= dict(
                median_ms=statistics.median(times), min_ms=min(times), repeats=len(times)
            )
        records.append(record)
    return records


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1024,2048,4096,8192,16384", help="comma-separated T")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--input_size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--variants", default=VARIANTS, help="comma-separated cell:method")
    parser.add_argument("--deer_jacobian", default="full", choices=("full", "diag"))
    parser.add_argument("--deer_tol", type=float, default=1e-5)
    parser.add_argument(
        "--precision",
        default="highest",
        choices=("highest", "default"),
        help="float32 matmuls: 'highest' (full float32 everywhere: JAX, and PyTorch with TF32 "
        "off) or each library's default (TF32 on recent GPUs)",
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed calls (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON lines file (default: per device)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, to check it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        parser.set_defaults(**SMOKE)
        args = parser.parse_args(argv)
    if args.precision == "highest":
        jax.config.update("jax_default_matmul_precision", "highest")
    out = args.out
    if out is None and not args.smoke:
        out = f"benchmarks/results/parallel_scan-{_device()[1]}.jsonl"
    records = []
    for num_steps in map(int, args.lengths.split(",")):
        xs = jax.random.normal(jax.random.key(0), (num_steps, args.batch, args.input_size))
        reference = {}  # the scan's ys per cell, for the accuracy column
        for variant in args.variants.split(","):
            for record in _records(variant, num_steps, args, xs, reference):
                records.append(record)
                if out:
                    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
                    with open(out, "a") as f:
                        f.write(json.dumps(record) + "\n")
    _print_table(records)
    return records


def _print_table(records: list[dict]) -> None:
    kind = records[0]["device"] if records else "?"
    print(f"device: {kind}, jax {jax.__version__}")
    print(
        "| T | cell | method | mode | compile s | median ms | × scan | max abs Δys | DEER iters |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    scan = {
        (r["T"], r["cell"], r["mode"]): r["median_ms"] for r in records if r["method"] == "scan"
    }
    for r in records:
        if "skipped" in r:
            print(f"| {r['T']} | {r['cell']} | {r['method']} | — | skipped: {r['skipped']} |||||")
            continue
        base = scan.get((r["T"], r["cell"], r["mode"]))
        ratio = f"{r['median_ms'] / base:.2f}" if base else "—"
        diff = r.get("max_abs_diff_vs_scan")
        diff = "" if diff is None else f"{diff:.1e}"
        deer = r.get("deer")
        iters = f"{deer['iterations']}{'' if deer['converged'] else ' (no conv.)'}" if deer else ""
        print(
            f"| {r['T']} | {r['cell']} | {r['method']} | {r['mode']} | {r['compile_s']:.2f} "
            f"| {r['median_ms']:.2f} | {ratio} | {diff} | {iters} |"
        )


if __name__ == "__main__":
    main()
