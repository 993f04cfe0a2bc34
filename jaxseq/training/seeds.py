"""Many seeds in one program: evaluation vmapped over seeds, and mean ± std summaries."""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxseq.training.records import PER_SEED, json_safe
from jaxseq.training.state import METRIC_NAMES, _check_leading_axis, _check_num_seeds


def seed_summary(values: Any) -> dict[str, Any]:
    """Mean, sample standard deviation and the values of one result over K seeds.

    Args:
      values: K numbers (a list or an array `[K]`), or one number (K = 1).

    Returns:
      `{"mean": float, "std": float, "per_seed": [K floats]}` with std the sample
      standard deviation (ddof=1; 0 for K = 1). NaN values propagate to mean/std
      and are written as null by `write_results`.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim > 1:
        raise ValueError(f"values must be a scalar or one value per seed [K], got {array.shape}")
    array = array.reshape(-1)
    if array.size == 0:
        raise ValueError("values must hold at least one seed's value, got none")
    std = float(np.std(array, ddof=1)) if array.size > 1 else 0.0
    return {"mean": float(np.mean(array)), "std": std, "per_seed": array.tolist()}


def evaluate(
    eval_fn: Callable[..., dict[str, jax.Array]],
    params: Any,
    *args: Any,
    num_seeds: int | None = None,
) -> dict[str, Any]:
    """Runs a jittable `eval_fn(params, *args) -> dict of scalars` under `jax.jit`.

    The jitted function is cached per `(eval_fn, num_seeds)`, so evaluating
    periodically compiles once. Pass large data as `args` rather than closing
    over it (closed-over arrays become constants of the compiled program).

    Args:
      eval_fn: `(params, *args) -> {name: scalar}`.
      params: a pytree; with `num_seeds=K` every leaf has a leading `[K]` axis.
      *args: shared inputs (e.g. test data), the same for every seed.
      num_seeds: K to vmap `eval_fn` over the seed axis of `params`, or None.

    Returns:
      `{name: float}`, or `{name: np.ndarray [K]}` with K seeds.
    """
    if num_seeds is not None:
        _check_leading_axis("params", params, num_seeds)
    values = jax.device_get(_jitted(eval_fn, num_seeds)(params, *args))
    if num_seeds is None:
        return {name: float(value) for name, value in values.items()}
    return {name: np.asarray(value, dtype=np.float64) for name, value in values.items()}


@functools.lru_cache(maxsize=16)
def _jitted(eval_fn: Callable, num_seeds: int | None) -> Callable:
    def checked(params, *args):
        out = eval_fn(params, *args)
        if not isinstance(out, dict):
            raise TypeError(f"eval_fn must return a dict of scalars, got {type(out).__name__}")
        for name, value in out.items():
            if np.shape(value) != ():
                raise ValueError(f"eval_fn's {name!r} must be a scalar, got {np.shape(value)}")
        return out

    if num_seeds is None:
        return jax.jit(checked)
    _check_num_seeds(num_seeds)
    return jax.jit(
        lambda params, *args: jax.vmap(checked, (0,) + (None,) * len(args))(params, *args)
    )


def host_record(metrics: dict[str, Any], num_seeds: int | None, prefix: str = "") -> dict:
    """Turns host metrics into record fields: floats, or mean + `_per_seed` lists.

    Args:
      metrics: `{name: scalar}`, or `{name: [K]}` with K seeds.
      num_seeds: K or None.
      prefix: prepended to every name (e.g. "eval_").

    Returns:
      `{prefix+name: value}` (JSON-safe; loss and norms first, then by name), plus
      `{prefix+name+"_per_seed": [K]}` for K seeds.
    """
    record = {}
    first = [name for name in METRIC_NAMES if name in metrics]
    for name in first + sorted(set(metrics) - set(first)):
        value = metrics[name]
        if num_seeds is None:
            record[prefix + name] = json_safe(np.asarray(value))
        else:
            per_seed: Sequence = json_safe(np.asarray(value).reshape(-1))
            record[prefix + name] = json_safe(np.mean(np.asarray(value, dtype=np.float64)))
            record[prefix + name + PER_SEED] = per_seed
    return record
