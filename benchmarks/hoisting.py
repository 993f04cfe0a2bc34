"""`jaxseq.unroll(hoist=True)` (one input projection before the scan) vs `hoist=False`.

Both compute the same LSTM train step (forward + BPTT, loss = Σ ys²); they run in
one process, alternating, 6 rounds of 5 timed calls; prints the median ms and the
temp memory (`memory_analysis()`) of each. `unroll`'s default (hoist=None) is
False on a CPU and True on accelerators; this is the measurement behind that.

    .venv/bin/python -m benchmarks.hoisting 100 32 32 128      # T B D H (shape A)
    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 \\
        .venv/bin/python -m benchmarks.hoisting 1000 16 8 64   # shape C, glibc tuned
"""

import statistics
import sys
import time

import jax
import jax.numpy as jnp

import jaxseq


def main(num_steps: int, batch: int, input_size: int, hidden: int) -> dict:
    cell = jaxseq.lstm(hidden)
    params = cell.init(jax.random.key(1), input_size)
    xs = jax.random.normal(jax.random.key(0), (num_steps, batch, input_size))

    def loss(p, xs, hoist):
        return jnp.sum(jaxseq.unroll(cell, p, xs, hoist=hoist)[1] ** 2)

    compiled = {
        name: jax.jit(jax.grad(loss), static_argnums=2).lower(params, xs, hoist).compile()
        for name, hoist in [("hoisted", True), ("in_step", False)]
    }
    for name, f in compiled.items():
        print(f"{name}: temp {f.memory_analysis().temp_size_in_bytes / 2**20:.1f} MiB")
    times = {name: [] for name in compiled}
    for _ in range(6):
        for name, f in compiled.items():
            jax.block_until_ready(f(params, xs))
            start = time.perf_counter()
            for _ in range(5):
                jax.block_until_ready(f(params, xs))
            times[name].append(1e3 * (time.perf_counter() - start) / 5)
    result = {name: round(statistics.median(t), 1) for name, t in times.items()}
    print(f"T,B,D,H={num_steps},{batch},{input_size},{hidden} median ms: {result}")
    return result


if __name__ == "__main__":
    main(*map(int, sys.argv[1:5]))
