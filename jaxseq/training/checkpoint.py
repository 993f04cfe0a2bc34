"""Orbax checkpoints of the whole `TrainState` under `out_dir/checkpoints/<step>`.

Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a run killed mid-save leaves only a `<step>.orbax-checkpoint-tmp-*`
directory, which restoring ignores (and the next manager deletes). Saves here are
synchronous: `save` returns once the checkpoint is on disk, so the (donated) state
can be reused at once and nothing is in flight when the loop raises or returns.
Orbax is imported on first use (it takes about a second).
"""

import os
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

CHECKPOINT_DIR = "checkpoints"
MAX_TO_KEEP = 3


def checkpoint_dir(out_dir: str | os.PathLike[str]) -> Path:
    """The directory holding a run's checkpoints, `out_dir/checkpoints` (absolute)."""
    return Path(out_dir).absolute() / CHECKPOINT_DIR


def open_manager(out_dir: str | os.PathLike[str]) -> Any:
    """An Orbax `CheckpointManager` for `out_dir/checkpoints`, keeping `MAX_TO_KEEP`."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=MAX_TO_KEEP,
        create=True,
        cleanup_tmp_directories=True,
        enable_async_checkpointing=False,
    )
    return ocp.CheckpointManager(checkpoint_dir(out_dir), options=options)


def clear(out_dir: str | os.PathLike[str]) -> bool:
    """Deletes `out_dir/checkpoints` (a fresh run); returns whether it existed."""
    path = checkpoint_dir(out_dir)
    existed = path.exists()
    if existed:
        shutil.rmtree(path)
    return existed


def save(manager: Any, step: int, state: Any) -> str:
    """Saves `state` as checkpoint `step`, waits until it is on disk, returns its path."""
    import orbax.checkpoint as ocp

    manager.save(step, args=ocp.args.StandardSave(state), force=True)
    manager.wait_until_finished()
    return path_of(manager, step)


def path_of(manager: Any, step: int | None) -> str | None:
    """The directory of checkpoint `step`, or None when `step` is None."""
    return None if step is None else str(Path(manager.directory) / str(step))


def restore(manager: Any, like: Any, step: int | None = None) -> Any | None:
    """Restores checkpoint `step` (default: the latest) with the structure of `like`.

    Args:
      manager: from `open_manager`.
      like: a pytree (e.g. the initial `TrainState`) whose structure, shapes and
        dtypes the checkpoint must have; its arrays are not read.
      step: which checkpoint; None for the latest.

    Returns:
      The restored pytree, or None when there is no checkpoint.

    Raises:
      ValueError: if the checkpoint `step` does not exist or does not fit `like`.
    """
    import orbax.checkpoint as ocp

    step = manager.latest_step() if step is None else step
    if step is None:
        return None
    if step not in manager.all_steps():
        raise ValueError(
            f"step must be one of the saved checkpoints {manager.all_steps()}, got {step}"
        )
    try:
        restored = manager.restore(step, args=ocp.args.StandardRestore(_target(like)))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"checkpoint {path_of(manager, step)} does not match the given state "
            f"(changed model or optimizer?): {error}"
        ) from error
    # Orbax may rebuild optax's NamedTuple states as plain tuples: restore `like`'s tree.
    leaves = [_placed(r, x) for r, x in zip(jax.tree.leaves(restored), jax.tree.leaves(like))]
    return jax.tree.unflatten(jax.tree.structure(like), leaves)


def _uncommitted(x: Any) -> bool:
    return isinstance(x, jax.Array) and not x.committed and np.dtype(x.dtype).kind in "biuf"


def _target(like: Any) -> Any:
    """Orbax's restore target: NumPy for uncommitted arrays, else shape/dtype/sharding.

    Uncommitted arrays (the default single-device placement) come back uncommitted,
    so jitted functions that saw the fresh state do not compile again for the
    restored one; sharded (committed) arrays come back with their sharding.
    """
    import orbax.checkpoint as ocp

    def target(x):
        return np.empty(x.shape, x.dtype) if _uncommitted(x) else ocp.utils.to_shape_dtype_struct(x)

    return jax.tree.map(target, like)


def _placed(restored: Any, like: Any) -> Any:
    return jnp.asarray(restored) if _uncommitted(like) else restored


def load_checkpoint(out_dir: str | os.PathLike[str], like: Any, *, step: int | None = None):
    """Loads a run's checkpoint, e.g. to evaluate a trained model later.

    Args:
      out_dir: the run directory given to `fit`.
      like: a pytree with the checkpoint's structure (e.g. `init_state(...)`).
      step: which checkpoint; None for the latest.

    Returns:
      The restored `TrainState` (or whatever pytree `like` is).

    Raises:
      FileNotFoundError: if `out_dir` holds no checkpoint.
    """
    if not checkpoint_dir(out_dir).exists():
        raise FileNotFoundError(f"no checkpoints under {checkpoint_dir(out_dir)}")
    manager = open_manager(out_dir)
    try:
        state = restore(manager, like, step)
    finally:
        manager.close()
    if state is None:
        raise FileNotFoundError(f"no checkpoints under {checkpoint_dir(out_dir)}")
    return state
