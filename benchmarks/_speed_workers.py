"""The measuring half of `benchmarks.speed`: what one worker process runs, and the remat report.

A worker process (started by `benchmarks.speed`) is one implementation at one
shape. `prepare` compiles and warms up each of its tasks (cell × mode) once;
`serve` then reports them and times steps whenever the parent asks, so the
parent can interleave short turns of every implementation (see `speed.py`).
Only the implementation being measured is imported, so a PyTorch worker never
loads JAX and a JAX worker never loads PyTorch (PERF_NOTES.md, lesson 1).
`mib` and `remat_markdown` format for the tables.
"""

import importlib.metadata
import json
import os
import statistics
import sys
import time

GATES = {"lstm": 4, "gru": 3}  # G: fused gate blocks per cell


def flops(cell: str, mode: str, shape: tuple[int, int, int, int]) -> float:
    """Analytic FLOPs of one call: forward 2·T·B·(D+H)·G·H, train step 3× forward."""
    t, b, d, h = shape
    forward = 2.0 * t * b * (d + h) * GATES[cell] * h
    return forward if mode == "forward" else 3.0 * forward


def _warm(fn, warmup: int) -> dict:
    """Calls `fn` (which must block until its result is ready) `warmup` times; times the first."""
    start = time.perf_counter()
    fn()
    first_call_s = time.perf_counter() - start
    for _ in range(warmup - 1):
        fn()
    return dict(first_call_s=first_call_s)


def timed(fn, steps: int, settle: int = 0) -> dict:
    """Wall-clock ms of `settle` calls of `fn` (`settle_ms`), then of `steps` more
    (`times_ms`, whose median is `median_ms`), and the load average just before them."""
    load, times = os.getloadavg()[0], []
    for _ in range(settle + steps):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    settle_ms, times = times[:settle], times[settle:]
    return dict(
        times_ms=times, median_ms=statistics.median(times), settle_ms=settle_ms, loadavg_1min=load
    )


def _timed(fn, warmup: int, steps: int) -> dict:
    return _warm(fn, warmup) | timed(fn, steps)


def memory(compiled) -> dict:
    """Bytes from `compiled.memory_analysis()`; peak = temp + argument + output − alias."""
    stats = compiled.memory_analysis()
    fields = ("temp", "argument", "output", "alias")
    record = {f"{name}_bytes": int(getattr(stats, f"{name}_size_in_bytes")) for name in fields}
    record["peak_bytes"] = (
        record["temp_bytes"]
        + record["argument_bytes"]
        + record["output_bytes"]
        - record["alias_bytes"]
    )
    # Kept for reference only: on CPU (jax 0.10.2) it equals argument + output bytes and
    # leaves out the temp buffers, which hold nearly all of a train step's memory.
    record["xla_peak_memory_in_bytes"] = getattr(stats, "peak_memory_in_bytes", None)
    return record


def _compile(fn, *args):
    import jax

    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _jaxseq_model(cell: str, xs, hidden: int, kwargs: dict):
    import jax

    import jaxseq

    model = jaxseq.lstm(hidden) if cell == "lstm" else jaxseq.gru(hidden)
    params = model.init(jax.random.key(1), xs.shape[-1])
    return (lambda p, xs: jaxseq.unroll(model, p, xs, **kwargs)[1]), params


def _flax_model(cell: str, xs, hidden: int, kwargs: dict):
    import flax.linen as nn
    import jax

    core = nn.OptimizedLSTMCell(hidden) if cell == "lstm" else nn.GRUCell(hidden)
    model = nn.RNN(core, time_major=True)
    return model.apply, model.init(jax.random.key(1), xs)


def _haiku_model(cell: str, xs, hidden: int, kwargs: dict):
    import haiku as hk
    import jax

    def forward(xs):
        core = hk.LSTM(hidden) if cell == "lstm" else hk.GRU(hidden)
        state = core.initial_state(xs.shape[1])
        return hk.dynamic_unroll(core, xs, state, time_major=True)[0]

    model = hk.without_apply_rng(hk.transform(forward))
    return model.apply, model.init(jax.random.PRNGKey(1), xs)


def _equinox_model(cell: str, xs, hidden: int, kwargs: dict):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    make = eqx.nn.LSTMCell if cell == "lstm" else eqx.nn.GRUCell
    params, static = eqx.partition(
        make(xs.shape[-1], hidden, key=jax.random.PRNGKey(1)), eqx.is_array
    )

    def apply(params, xs):
        core = jax.vmap(eqx.combine(params, static))  # one example per call, vmapped over B
        h0 = jnp.zeros((xs.shape[1], hidden), xs.dtype)

        def step(carry, x_t):
            carry = core(x_t, carry)
            return carry, carry[0] if cell == "lstm" else carry

        return jax.lax.scan(step, (h0, h0) if cell == "lstm" else h0, xs)[1]

    return apply, params


JAX_MODELS = {
    "jaxseq": _jaxseq_model,
    "flax": _flax_model,
    "haiku": _haiku_model,
    "equinox": _equinox_model,
}


def jax_tasks(impl: str, family: str, cell: str, modes: list[str], shape, options: dict):
    """Compiles and times each mode of one cell and shape of a JAX implementation.

    `family` picks the builder in `JAX_MODELS`; `options["kwargs"]` go to
    `jaxseq.unroll` (variants). A TypeError while tracing (e.g. a keyword that
    `unroll` does not take) skips the task with its message instead of failing.

    Returns:
      one `(record, run)` per mode, in the order of `modes`: `run()` makes one call and
      blocks until its result is ready (None for a skipped task, whose record says why).
    """
    import jax
    import jax.numpy as jnp

    t, b, d, h = shape
    xs = jax.random.normal(jax.random.key(0), (t, b, d))
    apply, params = JAX_MODELS[family](cell, xs, h, options.get("kwargs", {}))
    results = []
    for mode in modes:
        if mode == "forward":
            fn = apply
        else:
            fn = jax.value_and_grad(lambda p, xs: jnp.sum(apply(p, xs) ** 2))
        try:
            compiled, compile_s = _compile(fn, params, xs)
        except TypeError as error:
            results.append(
                (dict(skipped=f"unroll rejected {options.get('kwargs')}: {error}"), None)
            )
            continue
        run = lambda c=compiled: jax.block_until_ready(c(params, xs))  # noqa: E731
        record = dict(compile_s=compile_s, **memory(compiled)) | _warm(run, options["warmup"])
        results.append((record, run))
    return results


def torch_task(cell: str, mode: str, shape, options: dict) -> tuple[dict, object]:
    """PyTorch `nn.LSTM`/`nn.GRU`, warmed up (forward under `no_grad`; train: + backward)."""
    import torch

    torch.set_num_threads(options["torch_threads"])
    t, b, d, h = shape
    torch.manual_seed(0)
    model = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(d, h)
    xs = torch.randn(t, b, d)

    def forward():
        with torch.no_grad():
            return model(xs)[0]

    def train():
        model.zero_grad()
        loss = (model(xs)[0] ** 2).sum()
        loss.backward()
        return loss

    run = forward if mode == "forward" else train
    return dict(compile_s=None, peak_bytes=None) | _warm(run, options["warmup"]), run


def matmul(size: int, options: dict) -> tuple[dict, object]:
    """This machine's dense float32 rate, `size`² @ `size`² with JAX: `(record, run)`."""
    import jax

    k_a, k_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k_a, (size, size))
    b = jax.random.normal(k_b, (size, size))
    compiled, compile_s = _compile(lambda a, b: a @ b, a, b)
    run = lambda: jax.block_until_ready(compiled(a, b))  # noqa: E731
    record = dict(matmul_size=size, flops=2.0 * size**3, compile_s=compile_s)
    return record | _warm(run, options["warmup"]), run


def fma_peak(size: int, options: dict) -> tuple[dict, object]:
    """This CPU's peak float32 FMA rate: `jaxseq.native.fma_probe` on every kernel thread
    at once, as many FLOPs as the `size`² matmul: `(record, run)`, or a "skipped"
    record and None where the native kernels cannot run or JAX runs on another device."""
    import jax

    from jaxseq import native

    if jax.default_backend() != "cpu":  # the host CPU's rate says nothing of the device's
        return dict(skipped=f"the default backend is {jax.default_backend()!r}, not 'cpu'"), None
    ok, why = native.status()
    if not ok:
        return dict(skipped=f"jaxseq.native cannot run here: {why}"), None
    per_round = native.fma_probe(1)
    rounds = max(1, round(2.0 * size**3 / per_round))
    run = lambda: native.fma_probe(rounds)  # noqa: E731
    record = dict(matmul_size=size, flops=per_round * rounds, compile_s=None)
    record |= dict(threads=native.threads(), isa=native.isa())
    return record | _warm(run, options["warmup"]), run


def matmul_rate(record: dict) -> dict:
    """GFLOP/s of a timed matmul turn: at its median and at its fastest step."""
    flops = record["flops"]
    return dict(
        gflops=flops / (record["median_ms"] * 1e6),
        best_gflops=flops / (min(record["times_ms"]) * 1e6),
    )


REMAT_LOSSES = {  # the loss of the remat report: over every output, or the final state only
    "outputs": lambda ys, h_final: (ys**2).sum(),
    "final": lambda ys, h_final: (h_final**2).sum(),
}


def remat_report(shape, loss_name: str, options: dict) -> dict:
    """jaxseq LSTM train step with `remat=False` vs `remat=True`: memory, time, agreement.

    `loss_name` picks the loss from `REMAT_LOSSES`: "outputs" (Σ ys²) or "final"
    (Σ h_T², a sequence embedded in its last state). Over every output, both forms
    hold ys and its cotangent ([T, B, H] each) besides what BPTT keeps.
    """
    import jax
    import numpy as np

    import jaxseq

    t, b, d, h = shape
    cell = jaxseq.lstm(h)
    params = cell.init(jax.random.key(1), d)
    xs = jax.random.normal(jax.random.key(0), (t, b, d))
    record, results = dict(loss_name=loss_name), {}
    for remat in (False, True):

        def loss(p, xs, remat=remat):
            (h_final, _), ys = jaxseq.unroll(cell, p, xs, remat=remat)
            return REMAT_LOSSES[loss_name](ys, h_final)

        compiled, compile_s = _compile(jax.value_and_grad(loss), params, xs)
        results[remat] = jax.device_get(compiled(params, xs))
        measured = _timed(
            lambda c=compiled: jax.block_until_ready(c(params, xs)),
            options["warmup"],
            options["steps"],
        )
        name = "remat" if remat else "default"
        record[name] = dict(compile_s=compile_s, **memory(compiled)) | measured
    (loss_a, grads_a), (loss_b, grads_b) = results[False], results[True]
    diffs = [
        float(np.max(np.abs(a - b))) for a, b in zip(*map(jax.tree.leaves, (grads_a, grads_b)))
    ]
    scales = [float(np.max(np.abs(a))) for a in jax.tree.leaves(grads_a)]
    return record | dict(
        peak_ratio=record["default"]["peak_bytes"] / record["remat"]["peak_bytes"],
        temp_ratio=record["default"]["temp_bytes"] / record["remat"]["temp_bytes"],
        loss=float(loss_a),
        loss_abs_diff=float(abs(loss_a - loss_b)),
        grads_max_abs_diff=max(diffs),
        grads_max_rel_diff=max(d / max(s, 1e-30) for d, s in zip(diffs, scales)),
    )


def mib(size: int | None) -> str:
    """Bytes as MiB for the tables ("—" for None)."""
    if size is None:
        return "—"
    return f"{size / 2**20:.1f}" if size >= 2**20 else f"{size / 2**20:.2g}"


REMAT_TITLES = {"outputs": "loss Σ ys² (every output)", "final": "loss Σ h_T² (the final state)"}


def remat_markdown(r: dict) -> list[str]:
    """The remat report as markdown lines: a two-row table and the agreement line."""
    lines = [
        "",
        f"## remat: jaxseq LSTM train step, T = {r['T']}, B = {r['B']}, D = {r['D']}, "
        f"H = {r['H']}, {REMAT_TITLES[r['loss_name']]}",
        "",
        "| remat | peak MiB | temp MiB | median ms | compile s |",
        "|---|---|---|---|---|",
    ]
    for name in ("default", "remat"):
        m = r[name]
        lines.append(
            f"| {name == 'remat'} | {mib(m['peak_bytes'])} | {mib(m['temp_bytes'])} "
            f"| {m['median_ms']:.1f} | {m['compile_s']:.2f} |"
        )
    return lines + [
        "",
        f"Peak memory default ÷ remat: {r['peak_ratio']:.2f}× (temp bytes only: "
        f"{r['temp_ratio']:.2f}×). Loss {r['loss']:.6g}; |Δloss| = {r['loss_abs_diff']:.2e}, "
        f"max |Δgrad| = {r['grads_max_abs_diff']:.2e} (relative to each leaf's max |grad|: "
        f"{r['grads_max_rel_diff']:.1e}), remat vs default.",
    ]


def prepare(impl: str, family: str, shape_name: str, shape, args, kwargs: dict):
    """Compiles and warms up every task of one worker: `(records, runs)`, one of each per task.

    The tasks are each cell and mode at `shape` (in the order of `args.cells` and
    `args.modes`); `impl` "matmul" has two, the dense matmul and the peak FMA rate
    (kind "fma_peak"). `kwargs` go to
    `jaxseq.unroll` when `family` is "jaxseq". A skipped task's record has a
    "skipped" reason and its run is None.
    """
    options = dict(vars(args), kwargs=kwargs)
    env = environment(family) | dict(impl=impl)
    if impl == "matmul":
        record, run = matmul(args.matmul_size, options)
        peak, peak_run = fma_peak(args.matmul_size, options)
        return [env | dict(kind="matmul") | record, env | dict(kind="fma_peak") | peak], [
            run,
            peak_run,
        ]
    records, runs = [], []
    modes = [mode for mode in args.modes.split(",") if mode]
    for cell in [cell for cell in args.cells.split(",") if cell]:
        if family == "torch":
            results = [torch_task(cell, mode, shape, options) for mode in modes]
        else:
            results = jax_tasks(impl, family, cell, modes, shape, options)
        for mode, (result, run) in zip(modes, results):
            base = dict(kind="turn", cell=cell, mode=mode, shape=shape_name)
            base |= dict(zip("TBDH", shape), flops=flops(cell, mode, shape))
            base["unroll_kwargs"] = repr(kwargs) if family == "jaxseq" else None
            records.append(env | base | result)
            runs.append(run)
    return records, runs


def serve(records: list[dict], runs: list, commands, replies) -> None:
    """The worker's side of the turns: one JSON line of `records`, then one reply per command.

    Each command line is `{"task": i, "steps": n, "settle": k}` ("settle" optional, 0 if
    absent); the reply is `timed(runs[i], n, k)` as one JSON line. Returns at the end
    of `commands` (the parent closed the pipe).
    """
    replies.write(json.dumps(records) + "\n")
    replies.flush()
    for line in commands:
        command = json.loads(line)
        reply = timed(runs[command["task"]], command["steps"], command.get("settle", 0))
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def protocol_stream():
    """The real stdout for `serve`'s replies; fd 1 then goes to stderr, so that anything a
    library prints cannot end up in the middle of the protocol."""
    stream = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return stream


def remat_turn(args) -> list[dict]:
    """One remat report per loss in `REMAT_LOSSES`, at `args.remat_T` and `args.remat_shape`."""
    options = dict(vars(args), kwargs={})
    b, d, h = map(int, args.remat_shape.split(","))
    env = environment("jaxseq") | dict(impl="remat")
    base = env | dict(kind="remat", cell="lstm", T=args.remat_T, B=b, D=d, H=h)
    return [base | remat_report((args.remat_T, b, d, h), name, options) for name in REMAT_LOSSES]


def environment(family: str) -> dict:
    """Versions and machine state for the record (the load average shows contention)."""
    info = dict(loadavg_1min=os.getloadavg()[0], cpus=os.cpu_count())
    if family == "torch":
        import torch

        return info | dict(version=torch.__version__, device="cpu", platform="cpu")
    import jax

    info |= dict(jax=jax.__version__, platform=jax.devices()[0].platform)
    info |= dict(device=jax.devices()[0].device_kind)
    package = {"haiku": "dm-haiku", "jaxseq": "jaxseq", "flax": "flax", "equinox": "equinox"}
    if family in package:
        info["version"] = importlib.metadata.version(package[family])
    if family == "jaxseq":
        # builds the native kernel here if this source has not been built yet (g++,
        # ~7 s), so that no task's compile time includes it (run 17:21 had 6.74 s in
        # its first task's)
        from jaxseq import native

        ok, why = native.status()
        info["native"] = dict(ok=ok, why=why, isa=native.isa())
    return info
