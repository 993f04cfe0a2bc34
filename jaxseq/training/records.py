"""Host-side records: `metrics.jsonl`, `results.json`, TensorBoard events, log lines.

All JSON written here is strict: NaN and ±Inf become `null`, arrays become lists.
"""

import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
PER_SEED = "_per_seed"  # suffix of the per-seed lists in K-seed records


def json_safe(value: Any) -> Any:
    """Converts numbers, arrays and containers to strict-JSON values (NaN/Inf -> None).

    Args:
      value: a Python/NumPy/JAX scalar or array, or a dict/list/tuple of them.

    Returns:
      An object `json.dumps(..., allow_nan=False)` accepts.
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, str | bool | None):
        return value
    if hasattr(value, "shape") and np.ndim(value) > 0:
        return [json_safe(v) for v in np.asarray(value).tolist()]
    if hasattr(value, "dtype") or isinstance(value, int | float):
        item = np.asarray(value).item()
        if isinstance(item, float) and not math.isfinite(item):
            return None
        return item
    return value


def is_writer() -> bool:
    """Whether this process writes the run's files: process 0 of a multi-host run.

    Every process of a `jax.distributed` run computes the same metrics and results;
    only one writes them, so that processes sharing a file system do not race on
    `metrics.jsonl`, `results.json` or `config.json` (orbax coordinates checkpoints
    itself).
    """
    return jax.process_index() == 0


def write_results(out_dir: str | os.PathLike[str], results: dict) -> Path:
    """Writes `results` to `out_dir/results.json` (strict JSON, NaN -> null).

    Args:
      out_dir: the run directory; created if missing.
      results: a dict of scalars, arrays, `seed_summary` dicts, strings, ...

    Returns:
      The path of the written file.
    """
    if not isinstance(results, dict):
        raise TypeError(f"results must be a dict, got {type(results).__name__}")
    path = Path(out_dir) / RESULTS_FILE
    text = json.dumps(json_safe(results), indent=2, allow_nan=False) + "\n"
    if is_writer():  # the other processes of a multi-host run hold the same results
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def start_metrics(out_dir: str | os.PathLike[str], through_step: int) -> list[dict]:
    """Keeps the records of `out_dir/metrics.jsonl` with step <= `through_step`.

    The file is rewritten atomically; a torn last line (a run killed while
    writing) is dropped. `through_step=0` starts an empty file.

    Returns:
      The kept records, in order.
    """
    path = Path(out_dir) / METRICS_FILE
    kept = []
    if through_step > 0 and path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("step", math.inf) <= through_step:
                kept.append(record)
    if is_writer():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))
        os.replace(tmp, path)
    return kept


def append_metrics(out_dir: str | os.PathLike[str], record: dict) -> None:
    """Appends one strict-JSON line to `out_dir/metrics.jsonl` (process 0 only)."""
    if not is_writer():
        return
    with open(Path(out_dir) / METRICS_FILE, "a") as f:
        f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")


def format_record(record: dict) -> str:
    """One log line: `step 100: loss 0.1234, grad_norm 0.56, 12.3 ms/step`.

    Shows every scalar but the parameter and update norms; with K seeds each as
    `mean ± std` (sample std over seeds).
    """
    parts = []
    for name, value in record.items():
        if name in ("step", "param_norm", "update_norm", "ms_per_step") or name.endswith(PER_SEED):
            continue
        text = "nan" if value is None else f"{value:.4g}"
        per_seed = record.get(name + PER_SEED)
        if per_seed is not None and len(per_seed) > 1:
            text += f" ± {_std(per_seed):.2g}"
        parts.append(f"{name} {text}")
    if record.get("ms_per_step") is not None:
        parts.append(f"{record['ms_per_step']:.1f} ms/step")
    return f"step {record['step']}: " + ", ".join(parts)


def _std(values: list) -> float:
    array = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    return float(np.std(array, ddof=1)) if array.size > 1 else 0.0


def summary_writer_class() -> type:
    """tensorboardX's `SummaryWriter`, imported on demand.

    Raises:
      ImportError: naming the extra to install when tensorboardX is missing.
    """
    try:
        from tensorboardX import SummaryWriter
    except ImportError as error:
        raise ImportError(
            "tensorboard=True needs tensorboardX: pip install 'jaxseq[tensorboard]'"
        ) from error
    return SummaryWriter


def tensorboard_writer(out_dir: str | os.PathLike[str], purge_step: int | None = None):
    """A tensorboardX `SummaryWriter` writing event files into `out_dir`.

    Args:
      out_dir: the run directory.
      purge_step: on resume, the first step written again; TensorBoard then drops
        the earlier run's events from that step on.
    """
    return summary_writer_class()(logdir=str(out_dir), purge_step=purge_step)


def write_tensorboard(writer: Any, record: dict) -> None:
    """Writes each scalar of `record` (and `seed_k/name` per seed) at its step."""
    step = record["step"]
    for name, value in record.items():
        if name == "step" or value is None:
            continue
        if name.endswith(PER_SEED):
            for seed, v in enumerate(value):
                if v is not None:
                    writer.add_scalar(f"seed_{seed}/{name.removesuffix(PER_SEED)}", v, step)
        else:
            writer.add_scalar(name, value, step)
    writer.flush()
