"""The native forward kernel's two thread splits side by side: batch rows or hidden units.

`jaxseq.native.split_units` decides, when a call is traced, whether the forward
kernel splits its threads by hidden unit (one barrier per step; each thread
streams its units' share of the packed weights) though the batch would split
(each thread its rows, with every weight). Here both are compiled for the LSTM
and the GRU, forward pass and train step (loss Σ ys²), by setting
`UNIT_SPLIT_WEIGHTS_BYTES` and `UNIT_SPLIT_ROWS_BYTES` so that the rule says no,
then yes; they run in one process, alternating, 25 rounds; prints the min and
median ms, and checks that the two splits agree.

    .venv/bin/python -m benchmarks.thread_split                 # (T, B, D, H) = (50, 256, 256, 512)
    .venv/bin/python -m benchmarks.thread_split 100 64 128 256  # T B D H
"""

import sys

import jax
import jax.numpy as jnp

import jaxseq
from benchmarks._alternate import alternate
from jaxseq import native

SPLITS = {"rows": (float("inf"), 0), "units": (0, float("inf"))}  # weights, rows bounds


def _compile(cell, params, xs, mode: str, split: str):
    weights, rows = SPLITS[split]
    kept = native.UNIT_SPLIT_WEIGHTS_BYTES, native.UNIT_SPLIT_ROWS_BYTES
    native.UNIT_SPLIT_WEIGHTS_BYTES, native.UNIT_SPLIT_ROWS_BYTES = weights, rows
    try:
        if mode == "forward":
            fn = lambda p, xs: jaxseq.unroll(cell, p, xs, kernel="native")[1]  # noqa: E731
        else:
            fn = jax.value_and_grad(
                lambda p, xs: jnp.sum(jaxseq.unroll(cell, p, xs, kernel="native")[1] ** 2)
            )
        lowered = jax.jit(fn).lower(params, xs)
    finally:
        native.UNIT_SPLIT_WEIGHTS_BYTES, native.UNIT_SPLIT_ROWS_BYTES = kept
    if f"units = {int(split == 'units')} : i64" not in lowered.as_text():
        raise AssertionError(f"the {split} split was not traced")
    return lowered.compile()


def main(steps: int = 50, batch: int = 256, inputs: int = 256, hidden: int = 512) -> dict:
    xs = jax.random.normal(jax.random.key(0), (steps, batch, inputs))
    results = {}
    for name in ("lstm", "gru"):
        cell = getattr(jaxseq, name)(hidden)
        params = cell.init(jax.random.key(1), input_size=inputs)
        for mode in ("forward", "train"):
            compiled = {split: _compile(cell, params, xs, mode, split) for split in SPLITS}
            rows, units = (jax.tree.leaves(f(params, xs)) for f in compiled.values())
            for a, b in zip(rows, units, strict=True):
                scale = float(jnp.max(jnp.abs(a)))
                if not float(jnp.max(jnp.abs(a - b))) <= 1e-5 * max(scale, 1.0):
                    raise AssertionError(f"{name} {mode}: the two splits disagree")
            results[name, mode] = alternate(compiled, (params, xs))
            print(f"{name} {mode} (T, B, D, H)=({steps}, {batch}, {inputs}, {hidden}), "
                  f"(min, median) ms: {results[name, mode]}", flush=True)  # fmt: skip
    return results


if __name__ == "__main__":
    main(*map(int, sys.argv[1:5]))
