"""The char_lm model trained by jaxseq and by PyTorch `nn.LSTM`, side by side.

Both frameworks train the same network (embedding → one LSTM layer → linear
readout over the 65 KJV characters, as `experiments/char_lm.py` builds it)
from the same initial weights, on the same batches, with the same optimizer:

  data      every training batch is drawn once, here, with jaxseq's pure
            functions (`data.text_batch(train_ids, fold_in(key, step), B, T)`),
            as NumPy, and both workers read the same arrays; the validation
            windows are `data.text_windows(val_ids, eval_len, eval_windows)`;
  weights   `language_model.init` once; PyTorch gets them through
            `jaxseq.interop.to_torch` (LSTM: W = weight_ihᵀ, U = weight_hhᵀ,
            b → bias_ih, bias_hh = 0 and frozen, so that the one bias b gets one
            Adam update per step, as in jaxseq), the embedding table as is and
            the readout as `weight = wᵀ`;
  optimizer Adam (β = 0.9, 0.999, ε = 1e-8), the same learning rate and cosine
            (or constant) schedule, global-norm clipping before Adam
            (`optax.clip_by_global_norm` / `torch.nn.utils.clip_grad_norm_`).

Each framework runs in its own process (PyTorch's OpenMP threads spin-wait and
stall a JAX process beside them; ../shared/PERF_NOTES.md) and they take turns
for `--rounds` rounds, as `benchmarks/speed.py` does; PyTorch uses
`--torch_threads` (2) threads. Reported: the final training loss of each (the
mean over the last `--final_window` steps, on identical batches), their
relative difference (target: within 2%), the validation bpc of each, and the
speed ratio, median ms per train step PyTorch / jaxseq, JAX's compilation
excluded. Compare the ratio only: absolute times depend on the machine's load
(each record carries the 1-minute load average seen by its worker).

    .venv/bin/python -m benchmarks.char_lm_torch                 # 500 steps, H = 128
    .venv/bin/python -m benchmarks.char_lm_torch --steps=2000 --rounds=2
    .venv/bin/python -m benchmarks.char_lm_torch --smoke         # tiny, a few steps (CI)

Writes JSON lines to benchmarks/results/char_lm_torch-<device>.jsonl (`--out`;
none with `--smoke` unless given) and prints a markdown table.
"""

import argparse
import json
import math
import os
import pickle
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "steps=6 hidden_size=16 embed_size=8 seq_len=12 batch_size=4 eval_len=20 eval_windows=2"
SMOKE += " final_window=2 warmup=1"  # --smoke: tiny shapes, a few steps
POSITIVE = "steps hidden_size embed_size seq_len batch_size eval_len eval_windows final_window"
POSITIVE += " rounds torch_threads"  # flags that must be >= 1
BITS_PER_NAT = 1.0 / math.log(2.0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--steps", type=int, default=500, help="updates, the same for both")
    add("--hidden_size", type=int, default=128, help="LSTM width")
    add("--embed_size", type=int, default=32, help="embedding width")
    add("--seq_len", type=int, default=100, help="BPTT window (characters per training window)")
    add("--batch_size", type=int, default=32, help="training windows per step")
    add("--learning_rate", type=float, default=3e-3, help="Adam's peak step size")
    add("--grad_clip", type=float, default=1.0, help="global-norm clip; 0 disables")
    add("--schedule", default="cosine", choices=("constant", "cosine"), help="to 0 at --steps")
    add("--eval_len", type=int, default=1000, help="characters per validation window")
    add("--eval_windows", type=int, default=16, help="validation windows (from its start)")
    add("--final_window", type=int, default=50, help="last steps averaged for the final loss")
    add("--warmup", type=int, default=5, help="first steps left out of the timings")
    add("--seed", type=int, default=0, help="init key(seed), data fold_in(key(seed), 1)")
    add("--rounds", type=int, default=1, help="turns each framework takes")
    add("--torch_threads", type=int, default=2, help="torch.set_num_threads")
    add("--out", default=None, help="JSON lines file (default: per device; none with --smoke)")
    add("--smoke", action="store_true", help="tiny shapes and a few steps, to check it runs")
    add("--worker", nargs=2, metavar=("IMPL", "SETUP"), help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the flags (`--smoke` swaps in `SMOKE` defaults) and checks them."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.smoke:
        parser.set_defaults(**{k: int(v) for k, v in (f.split("=") for f in SMOKE.split())})
        args = parser.parse_args(argv)
    for name in POSITIVE.split():
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not (args.learning_rate > 0 and args.grad_clip >= 0):
        parser.error(f"need --learning_rate > 0 and --grad_clip >= 0, got {vars(args)}")
    if not 0 <= args.warmup < args.steps or args.final_window > args.steps:
        parser.error(f"need 0 <= --warmup < --steps >= --final_window, got {vars(args)}")
    return args


def build_model(args, vocab_size: int):
    """`(layer, language_model)`: the LSTM layer alone (for `to_torch`) and the whole net."""
    import jaxseq
    from jaxseq import models

    layer = jaxseq.rnn(jaxseq.lstm(args.hidden_size))  # forget bias 1, as --cell=lstm
    return layer, models.language_model(layer, vocab_size, embed_size=args.embed_size)


def prepare(args) -> dict:
    """Initial params, every training batch and the validation windows, as NumPy.

    Returns:
      `{"vocab_size", "params" (the jaxseq pytree, NumPy leaves), "inputs" and
      "targets" int32 [steps, T, B], "val" (inputs, targets) int32 [L, N]}`.
    """
    import jax

    from jaxseq import data

    train_ids, val_ids, vocab = data.char_corpus("kjv")
    _, model = build_model(args, vocab.size)
    key = jax.random.key(args.seed)
    params = jax.tree.map(np.asarray, model.init(key))

    @jax.jit
    def draw(ids, steps):
        data_key = jax.random.fold_in(key, 1)
        keys = jax.vmap(lambda s: jax.random.fold_in(data_key, s))(steps)
        return jax.vmap(lambda k: data.text_batch(ids, k, args.batch_size, args.seq_len))(keys)

    inputs, targets = jax.device_get(draw(train_ids, np.arange(args.steps)))
    val = data.text_windows(val_ids, args.eval_len, max_windows=args.eval_windows)
    return dict(vocab_size=vocab.size, params=params, inputs=inputs, targets=targets, val=val)


def _timed(step, count: int) -> tuple[list[float], list[float]]:
    """Runs `step(i) -> loss` for i < count; returns (losses, ms per step)."""
    losses, times = [], []
    for i in range(count):
        start = time.perf_counter()
        losses.append(step(i))
        times.append(1e3 * (time.perf_counter() - start))
    return losses, times


def run_jaxseq(setup: dict, args) -> dict:
    """Trains with `training.make_train_step` (the step every experiment uses)."""
    import jax
    import jax.numpy as jnp

    from jaxseq import models, training

    _, model = build_model(args, setup["vocab_size"])

    def loss_fn(params, batch, key):
        return models.cross_entropy(model.apply(params, batch[0])[0], batch[1]), {}

    total = args.steps if args.schedule != "constant" else None
    optimizer = training.make_optimizer(
        "adam",
        args.learning_rate,
        grad_clip=args.grad_clip,
        schedule=args.schedule,
        total_steps=total,
    )
    state = training.init_state(jax.tree.map(jnp.asarray, setup["params"]), optimizer)
    batches = [jax.device_put((x, y)) for x, y in zip(setup["inputs"], setup["targets"])]
    key = jax.random.key(0)  # unused: no dropout
    start = time.perf_counter()
    compiled = training.make_train_step(loss_fn, optimizer).lower(state, batches[0], key).compile()
    compile_s = time.perf_counter() - start

    def step(i):
        nonlocal state
        state, metrics = compiled(state, batches[i], key)
        return jax.block_until_ready(metrics)["loss"]

    losses, times = _timed(step, args.steps)
    val_x, val_y = (jnp.asarray(a) for a in setup["val"])
    val_nats = jax.jit(lambda p: models.cross_entropy(model.apply(p, val_x)[0], val_y))
    val_bpc = float(val_nats(state.params)) * BITS_PER_NAT
    losses = [float(v) for v in losses]
    version, backend = jax.__version__, jax.devices()[0].platform
    return dict(
        losses=losses,
        ms=times,
        compile_s=compile_s,
        val_bpc=val_bpc,
        version=version,
        platform=backend,
    )


def torch_model(setup: dict, args):
    """The PyTorch network with jaxseq's initial weights: `(model, trainable params)`."""
    import torch
    from torch import nn

    from jaxseq import interop

    class CharLSTM(nn.Module):
        def __init__(self, vocab_size: int):
            super().__init__()
            self.embed = nn.Embedding(vocab_size, args.embed_size)
            self.lstm = nn.LSTM(args.embed_size, args.hidden_size)  # time-major
            self.readout = nn.Linear(args.hidden_size, vocab_size)

        def forward(self, tokens):  # [T, B] -> logits [T, B, V]
            return self.readout(self.lstm(self.embed(tokens))[0])

    params = setup["params"]
    model = CharLSTM(setup["vocab_size"])
    layer, _ = build_model(args, setup["vocab_size"])
    interop.to_torch(layer, params["rnn"], model.lstm)  # b -> bias_ih, bias_hh = 0
    model.lstm.bias_hh_l0.requires_grad_(False)  # one trainable bias, as in jaxseq
    with torch.no_grad():
        model.embed.weight.copy_(torch.tensor(np.array(params["embed"])))
        model.readout.weight.copy_(torch.tensor(np.array(params["readout"].w.T)))
        model.readout.bias.copy_(torch.tensor(np.array(params["readout"].b)))
    return model, [p for p in model.parameters() if p.requires_grad]


def _lr_factor(args, t: int) -> float:
    """lr_t / lr after t updates, as `optax.cosine_decay_schedule(lr, steps)` (or constant)."""
    if args.schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(t, args.steps) / args.steps))


def run_torch(setup: dict, args) -> dict:
    """Trains the same network with `torch.optim.Adam` and `clip_grad_norm_`."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.torch_threads)
    model, trainable = torch_model(setup, args)
    optimizer = torch.optim.Adam(trainable, lr=args.learning_rate, betas=(0.9, 0.999), eps=1e-8)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(_lr_factor, args))
    inputs = [torch.tensor(np.array(x), dtype=torch.long) for x in setup["inputs"]]
    targets = [torch.tensor(np.array(y), dtype=torch.long).reshape(-1) for y in setup["targets"]]
    vocab_size = setup["vocab_size"]

    def step(i):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(inputs[i]).reshape(-1, vocab_size), targets[i])
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, args.grad_clip)
        optimizer.step()
        schedule.step()
        return loss.item()

    losses, times = _timed(step, args.steps)
    val_x, val_y = (torch.tensor(np.array(a), dtype=torch.long) for a in setup["val"])
    with torch.no_grad():
        val_nats = F.cross_entropy(model(val_x).reshape(-1, vocab_size), val_y.reshape(-1))
    val_bpc = float(val_nats) * BITS_PER_NAT
    version = torch.__version__
    return dict(
        losses=losses, ms=times, compile_s=0.0, val_bpc=val_bpc, version=version, platform="cpu"
    )


def summarise(run: dict, args) -> dict:
    """A run's record: median/fastest ms after `--warmup` steps and the final loss (a copy)."""
    ms, losses = run["ms"][args.warmup :], run["losses"]
    record = {k: v for k, v in run.items() if k != "ms"}
    return record | dict(
        median_ms=statistics.median(ms),
        min_ms=min(ms),
        timed_steps=len(ms),
        final_loss=statistics.fmean(losses[-args.final_window :]),
        last_loss=losses[-1],
    )


def worker(impl: str, setup_path: str, args) -> dict:
    """One framework's run in this process (the 1-minute load average seen at its start)."""
    with open(setup_path, "rb") as f:
        setup = pickle.load(f)
    load = os.getloadavg()[0]
    run = run_torch(setup, args) if impl == "torch" else run_jaxseq(setup, args)
    return summarise(run, args) | dict(impl=impl, loadavg_1min=load)


def compare(jax_run: dict, torch_run: dict) -> dict:
    """Relative loss differences (torch vs jaxseq) and the speed ratio torch / jaxseq."""
    a, b = np.asarray(jax_run["losses"]), np.asarray(torch_run["losses"])
    return dict(
        final_loss_rel_diff=abs(torch_run["final_loss"] - jax_run["final_loss"])
        / jax_run["final_loss"],
        max_step_loss_rel_diff_first10=float(np.max(np.abs(b[:10] - a[:10]) / a[:10])),
        val_bpc_rel_diff=abs(torch_run["val_bpc"] - jax_run["val_bpc"]) / jax_run["val_bpc"],
        speed_ratio_torch_over_jaxseq=torch_run["median_ms"] / jax_run["median_ms"],
    )


def _device() -> tuple[str, str]:
    import jax

    kind = jax.devices()[0].device_kind
    return kind, re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")


def _run_worker(impl: str, setup_path: str, argv: list[str]) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.char_lm_torch", *argv, "--worker", impl, setup_path]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def _take_turns(args, argv: list[str]) -> list[dict]:
    """Writes the shared setup once, then runs jaxseq and torch workers in turn per round."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        setup_path = os.path.join(tmp, "setup.pkl")
        with open(setup_path, "wb") as f:
            pickle.dump(prepare(args), f)
        for round_ in range(args.rounds):
            for impl in ("jaxseq", "torch"):
                runs.append(_run_worker(impl, setup_path, argv) | {"round": round_})
    return runs


def main(argv: list[str] | None = None) -> dict:
    """Prepares the shared setup, runs the workers in turns, writes and prints the results.

    Returns:
      `{"runs": [one record per worker run], "summary": record}`; the summary
      compares round 0's runs (their losses are the same in every round) and
      takes the median of the per-round speed ratios.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args)))
        return {}
    kind, slug = _device()
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "worker")}
    base = settings | dict(device=kind, machine=platform.machine(), cpus=os.cpu_count())
    runs = [base | run for run in _take_turns(args, argv)]
    by = {(r["impl"], r["round"]): r for r in runs}
    summary = base | compare(by["jaxseq", 0], by["torch", 0]) | {"impl": "summary"}
    summary["speed_ratio_torch_over_jaxseq"] = statistics.median(
        by["torch", k]["median_ms"] / by["jaxseq", k]["median_ms"] for k in range(args.rounds)
    )
    out = args.out or (None if args.smoke else f"benchmarks/results/char_lm_torch-{slug}.jsonl")
    if out:
        _write(out, [*runs, summary])
    _print_table(runs, summary, args)
    return {"runs": runs, "summary": summary}


def _write(path: str, records: list[dict]) -> None:
    """Appends the records as JSON lines, the per-step losses cut to the first 10."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as f:
        for record in records:
            losses = record.get("losses", [])[:10]
            kept = {k: v for k, v in record.items() if k != "losses"}
            f.write(json.dumps(kept | {"losses_first10": losses}) + "\n")


def _print_table(runs: list[dict], summary: dict, args) -> None:
    print(
        f"char_lm, {args.steps} steps, T={args.seq_len} B={args.batch_size} E={args.embed_size} "
        f"H={args.hidden_size}, {summary['device']}; both in their own process, taking turns"
    )
    print(
        f"| framework | final train loss (mean of last {args.final_window} steps, nats) "
        "| val bpc | median ms/step (per round) | compile s |"
    )
    print("|---|---|---|---|---|")
    for impl in ("jaxseq", "torch"):
        mine = [r for r in runs if r["impl"] == impl]
        per_round = " / ".join(f"{r['median_ms']:.1f}" for r in mine)
        name = "PyTorch nn.LSTM" if impl == "torch" else "jaxseq"
        name += f" {mine[0]['version']} ({mine[0]['platform']})"
        print(
            f"| {name} | {mine[0]['final_loss']:.4f} | {mine[0]['val_bpc']:.4f} | {per_round} "
            f"| {mine[0]['compile_s']:.1f} |"
        )
    print(
        f"final loss relative difference {summary['final_loss_rel_diff']:.2%} (target < 2%); "
        f"first 10 steps: max {summary['max_step_loss_rel_diff_first10']:.1e}; "
        f"speed ratio PyTorch / jaxseq (median ms/step) "
        f"{summary['speed_ratio_torch_over_jaxseq']:.2f}"
    )


if __name__ == "__main__":
    main()
