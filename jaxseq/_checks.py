"""Input validation shared by cells, `unroll` and layers.

Every check runs at trace time on shapes and dtypes (free under `jit`); value
checks (lengths in range, NaN in data) run only when the array is concrete.
Messages name the argument, the expected and the actual value.
"""

from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_option(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raises `ValueError` unless `value` is one of `allowed`."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def check_positive_int(name: str, value: Any) -> None:
    """Raises unless `value` is a Python int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_compute_dtype(value: Any) -> np.dtype | None:
    """Normalises a `compute_dtype` argument: None, or a floating dtype such as bfloat16.

    Args:
      value: None, a dtype (`jnp.bfloat16`, `np.float32`) or its name (`"bfloat16"`).

    Returns:
      None, or the `numpy.dtype`.

    Raises:
      ValueError: naming `compute_dtype`, when `value` is not a floating dtype.
    """
    if value is None:
        return None
    try:
        dtype = jnp.dtype(value)
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"compute_dtype must be None or a floating dtype such as jnp.bfloat16, got {value!r}"
        )
    return dtype


def check_inputs(cell: Any, params: Any, xs: Any, *, name: str, time_axis: bool) -> None:
    """Checks rank, dtype and feature size of `xs` against the cell's params.

    Any floating dtype is accepted (e.g. bfloat16 inputs to float32 params):
    the cell's `project` casts `xs` to the parameter dtype. Integer and bool
    inputs are rejected.

    Args:
      cell: the `Cell`.
      params: its parameters (concrete or abstract).
      xs: `[T, *batch, in]` when `time_axis` else `[*batch, in]`.
      name: the argument's name for messages.
      time_axis: whether the leading axis is time.
    """
    shape = getattr(xs, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an array, got {type(xs).__name__}")
    min_rank = 2 if time_axis else 1
    layout = "[time, *batch, features]" if time_axis else "[*batch, features]"
    if len(shape) < min_rank:
        raise ValueError(
            f"{name} must have shape {layout} (rank >= {min_rank}), got shape {tuple(shape)}"
        )
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {xs.dtype}")
    expected = cell.input_size(params)
    if shape[-1] != expected:
        raise ValueError(
            f"{name} has {shape[-1]} features but the cell {cell.name} was "
            f"initialised for {expected} (shape {tuple(shape)})"
        )
    if _is_concrete(xs) and not np.isfinite(np.asarray(xs)).all():
        raise ValueError(f"{name} contains NaN or Inf values")


def check_carry(cell: Any, params: Any, carry: Any, batch_shape: tuple[int, ...]) -> None:
    """Checks that `carry` has the structure, shapes and dtypes the cell expects."""
    expected = jax.eval_shape(lambda p: cell.initial_carry(p, batch_shape), params)
    exp_leaves, exp_tree = jax.tree.flatten(expected)
    leaves, tree = jax.tree.flatten(carry)
    if tree != exp_tree:
        raise ValueError(f"carry must have the structure {exp_tree} for {cell.name}, got {tree}")
    for leaf, exp in zip(leaves, exp_leaves, strict=True):
        if tuple(leaf.shape) != tuple(exp.shape):
            raise ValueError(
                f"carry leaves must have shape {tuple(exp.shape)} (batch {batch_shape}, "
                f"hidden {cell.hidden_size}), got {tuple(leaf.shape)}"
            )
        if leaf.dtype != exp.dtype:
            raise TypeError(
                f"carry leaves must have dtype {exp.dtype} (the cell's parameter dtype), "
                f"got {leaf.dtype}"
            )


def check_lengths(lengths: Any, num_steps: int, batch_shape: tuple[int, ...]) -> None:
    """Checks `lengths: int [*batch]` with values in [0, num_steps] (when concrete)."""
    shape = getattr(lengths, "shape", None)
    if shape is None:
        raise TypeError(f"lengths must be an integer array, got {type(lengths).__name__}")
    if tuple(shape) != tuple(batch_shape):
        raise ValueError(
            f"lengths must have the batch shape of xs {tuple(batch_shape)}, got {tuple(shape)}"
        )
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths must have an integer dtype, got {lengths.dtype}")
    if _is_concrete(lengths) and lengths.size:
        values = np.asarray(lengths)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > num_steps:
            raise ValueError(
                f"lengths must lie in [0, {num_steps}] (the number of time steps), "
                f"got values in [{low}, {high}]"
            )
