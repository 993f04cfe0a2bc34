"""The NaN/Inf guard's host side: find the first non-finite update at a sync point.

The device side is in `state.py`: a step with a non-finite loss or gradient norm
leaves the state unchanged, step counter included, so at a sync `state.step` lags
the loop's own counter exactly when a bad step happened, and the replayed metrics
name the culprit.
"""

import math
from typing import Any

import numpy as np

from jaxseq.training.state import GUARDED


class NonFiniteError(FloatingPointError):
    """Training met a NaN/Inf loss, gradient norm or update norm and stopped.

    Attributes:
      step: the update that went bad, counted from 1 as in `metrics.jsonl`.
      metric: "loss" or "grad_norm" (the first non-finite one), or "param_norm"
        when a finite gradient gave non-finite parameters.
      value: its value (NaN, ±Inf).
      checkpoint: the path of the last good checkpoint, or None.
      seed: the seed index with K seeds, else None.
    """

    def __init__(
        self,
        step: int,
        metric: str,
        value: float,
        checkpoint: str | None = None,
        seed: int | None = None,
    ):
        self.step, self.metric, self.value = step, metric, value
        self.checkpoint, self.seed = checkpoint, seed
        who = "" if seed is None else f" for seed {seed}"
        kept = checkpoint or "none (no checkpoint was saved before the bad step)"
        if metric == "param_norm":
            what = "an update from finite gradients made the parameters non-finite"
        else:
            what = f"the update was rejected and training stopped at step {step - 1}"
        super().__init__(
            f"non-finite {metric} ({value}) at step {step}{who}: {what}; "
            f"last good checkpoint: {kept}"
        )

    def __reduce__(self):
        return type(self), (self.step, self.metric, self.value, self.checkpoint, self.seed)


def find_bad_step(
    expected_step: int, state_step: Any, metrics: dict[str, Any]
) -> tuple[int, str, float, int | None] | None:
    """Finds the first non-finite update from host copies of `state.step` and metrics.

    Args:
      expected_step: the loop's count of steps run (what `state.step` is when all
        were good).
      state_step: host `state.step`, a scalar or `[K]` for K seeds.
      metrics: host metrics of the last call, scalars or `[K]`.

    Returns:
      None when no step went bad, else `(step, metric, value, seed)`: the bad
      update counted from 1, the first of `GUARDED` that is not finite, its value,
      and the seed index (None without seeds). The metric is "unknown" with value
      NaN if the replay of the bad step happened to be finite. Without a lag, a
      non-finite `param_norm` (an update that went bad from finite gradients,
      which the step does not reject) is reported at `expected_step`.
    """
    flat = np.asarray(state_step).reshape(-1)
    lagging = np.flatnonzero(flat < expected_step)
    if lagging.size == 0:
        norms = np.asarray(metrics["param_norm"], dtype=np.float64).reshape(-1)
        bad = np.flatnonzero(~np.isfinite(norms))
        if bad.size == 0:
            return None
        seed = int(bad[0]) if np.ndim(state_step) else None
        return expected_step, "param_norm", float(norms[bad[0]]), seed
    index = int(lagging[np.argmin(flat[lagging])])
    seed = index if np.ndim(state_step) else None
    step = int(flat[index]) + 1
    for name in GUARDED:
        value = float(np.asarray(metrics[name]).reshape(-1)[index])
        if not math.isfinite(value):
            return step, name, value, seed
    return step, "unknown", math.nan, seed
