"""Times compiled functions in one process, taking turns (the micro-benchmarks' loop)."""

import statistics
import time

import jax


def alternate(compiled: dict, args: tuple, rounds: int = 25) -> dict:
    """`{name: (min ms, median ms)}`: each round, every function one warm call, then one timed."""
    times = {name: [] for name in compiled}
    for _ in range(rounds):
        for name, f in compiled.items():
            jax.block_until_ready(f(*args))
            start = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[name].append(1e3 * (time.perf_counter() - start))
    return {n: (round(min(t), 2), round(statistics.median(t), 2)) for n, t in times.items()}
