"""Data-parallel (and FSDP-style) training over `jax.devices()` with `jax.sharding`.

One `Mesh` with a "data" axis (and a "model" axis, size 1 unless asked) spans the
devices of every process. The batch is split along its batch axis over "data";
parameters and optimizer state are replicated (or, with `shard_params`, each leaf
is split along one dimension). The train step is the same jitted function as on
one device: XLA inserts the gradient all-reduce from the shardings of its inputs.

    mesh = sharding.make_mesh()                            # all devices on "data"
    state = sharding.replicate(training.init_state(params, optimizer), mesh)
    batch = sharding.shard_batch((xs, labels), mesh, axes=(1, 0))   # xs [T, B, F]
    state, metrics = train_step(state, batch, key)         # the usual make_train_step

`fit` generates batches inside its jitted step; pass
`batch_sharding=sharding.batch_sharding(mesh, like_batch, axes)` to it (or to
`train_seeds`) so that every device computes only its slice.

Several hosts: call `initialize()` first in every process (it reads the
coordinator from flags or `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
`JAX_PROCESS_ID`), build the mesh over all devices, and either generate the batch
in the step (as `fit` does) or feed each process's slice (`process_shard`) with
`global_batch`.
"""

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA = "data"
MODEL = "model"
AXES = (DATA, MODEL)


def make_mesh(*, data: int | None = None, model: int = 1, devices: Any = None) -> Mesh:
    """A 2-D device mesh with axes ("data", "model").

    Args:
      data: size of the data axis; None uses all devices left by `model`.
      model: size of the model axis (1: pure data parallelism).
      devices: the devices to use (default `jax.devices()`, those of every process).

    Returns:
      A `Mesh` of shape `(data, model)`.
    """
    devices = list(jax.devices() if devices is None else devices)
    _check_size("model", model)
    if data is None:
        data = len(devices) // model
    _check_size("data", data)
    if data * model != len(devices):
        raise ValueError(
            f"data * model must equal the number of devices {len(devices)}, "
            f"got data={data}, model={model}"
        )
    return jax.make_mesh((data, model), AXES, (AxisType.Auto,) * 2, devices=devices)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a full copy of every leaf of `tree` on every device of `mesh`."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def batch_sharding(mesh: Mesh, batch: Any, axes: Any = 0) -> Any:
    """The `NamedSharding` of each batch leaf: its batch axis split over "data".

    Args:
      mesh: from `make_mesh`.
      batch: a pytree of arrays or `jax.ShapeDtypeStruct`s (only shapes are read).
      axes: the batch axis of every leaf: an int, or a pytree prefix of `batch`
        with int leaves (e.g. `(1, 0)` for time-major `xs [T, B, F]` and `labels [B]`).

    Returns:
      A pytree of `NamedSharding` shaped like `batch`.

    Raises:
      ValueError: naming the leaf whose batch size the data axis does not divide.
    """
    size = mesh.shape[DATA]

    def one(path, axis, leaf):
        shape = np.shape(leaf)
        where = "batch" + jax.tree_util.keystr(path)
        if not -len(shape) <= axis < len(shape):
            raise ValueError(f"{where} has shape {shape}: no batch axis {axis}")
        axis %= len(shape)
        if shape[axis] % size:
            raise ValueError(
                f"{where} has batch size {shape[axis]} (axis {axis} of shape {shape}), "
                f"not divisible by the mesh's data axis of size {size}"
            )
        spec = [None] * len(shape)
        spec[axis] = DATA
        return NamedSharding(mesh, PartitionSpec(*spec))

    return _map_axes(one, axes, batch)


def shard_batch(batch: Any, mesh: Mesh, axes: Any = 0) -> Any:
    """Splits every leaf of `batch` along its batch axis over the "data" axis.

    Args:
      batch: a pytree of arrays holding the global batch (same on every process).
      mesh: from `make_mesh`.
      axes: batch axis per leaf, an int or a pytree prefix (see `batch_sharding`).

    Returns:
      `batch` with each leaf a sharded `jax.Array`.
    """
    return jax.device_put(batch, batch_sharding(mesh, batch, axes))


def constrain_batch(batch: Any, mesh: Mesh, axes: Any = 0) -> Any:
    """Inside `jit`: asks XLA to shard `batch` along its batch axes (no data moves twice)."""
    return jax.lax.with_sharding_constraint(batch, batch_sharding(mesh, batch, axes))


def shard_params(tree: Any, mesh: Mesh, axis: str = DATA) -> Any:
    """FSDP-style placement: each leaf split along its largest dimension that `axis` divides.

    Leaves with no such dimension (scalars, small biases) are replicated. Apply it
    to a whole `TrainState`: Adam's moments then follow their parameters.

    Args:
      tree: a pytree of arrays (parameters, or a `TrainState`).
      mesh: from `make_mesh`.
      axis: the mesh axis to split over ("data" for FSDP, "model" otherwise).

    Returns:
      `tree` placed on `mesh`.
    """
    if axis not in mesh.axis_names:
        raise ValueError(f"axis must be one of {mesh.axis_names}, got {axis!r}")
    size = mesh.shape[axis]

    def place(leaf):
        return jax.device_put(leaf, NamedSharding(mesh, param_spec(np.shape(leaf), size, axis)))

    return jax.tree.map(place, tree)


def param_spec(shape: tuple[int, ...], size: int, axis: str) -> PartitionSpec:
    """`PartitionSpec` putting `axis` on the largest dim of `shape` that `size` divides."""
    fits = [d for d in range(len(shape)) if shape[d] >= size and shape[d] % size == 0]
    if size == 1 or not fits:
        return PartitionSpec()
    best = max(fits, key=lambda d: (shape[d], -d))
    spec = [None] * len(shape)
    spec[best] = axis
    return PartitionSpec(*spec)


def _map_axes(fn, axes: Any, tree: Any) -> Any:
    """`fn(path, axis, leaf)` over `tree`, with `axes` an int or a prefix of `tree`."""
    try:
        full = jax.tree.map(lambda a, sub: jax.tree.map(lambda _: a, sub), axes, tree)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"axes must be an int or a pytree prefix of the batch with int leaves, "
            f"got {axes!r} for a batch of structure {jax.tree.structure(tree)}"
        ) from error
    for leaf in jax.tree.leaves(full):
        if isinstance(leaf, bool) or not isinstance(leaf, int):
            raise ValueError(f"axes leaves must be ints, got {leaf!r}")
    return jax.tree_util.tree_map_with_path(fn, full, tree)


def _check_size(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


# --- several processes (hosts) ----------------------------------------------------------


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
) -> bool:
    """Starts JAX's multi-controller runtime (`jax.distributed.initialize`) once per process.

    Each argument left None is read from the environment: `JAX_COORDINATOR_ADDRESS`
    ("host:port" of process 0), `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`. With no
    coordinator anywhere the run is single-process and nothing happens, unless
    `auto=True`, which lets JAX detect the cluster (Cloud TPU pods, SLURM, Open MPI).

    Args:
      coordinator_address: "host:port" of process 0's coordinator, or None.
      num_processes: number of processes, or None.
      process_id: this process's index in `[0, num_processes)`, or None.
      auto: call `jax.distributed.initialize()` with JAX's cluster auto-detection.

    Returns:
      Whether the distributed runtime was initialised.
    """
    if auto:
        jax.distributed.initialize()
        return True
    address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num = _int_or_env("num_processes", num_processes, "JAX_NUM_PROCESSES")
    pid = _int_or_env("process_id", process_id, "JAX_PROCESS_ID")
    if address is None:
        if num not in (None, 1):
            raise ValueError(f"num_processes={num} needs a coordinator_address (host:port)")
        return False
    if num is None or pid is None or not 0 <= pid < num:
        raise ValueError(
            f"coordinator_address={address!r} needs num_processes > 0 and "
            f"0 <= process_id < num_processes, got num_processes={num}, process_id={pid}"
        )
    jax.distributed.initialize(address, num, pid)
    return True


def _int_or_env(name: str, value: int | None, env: str) -> int | None:
    if value is None and os.environ.get(env):
        try:
            value = int(os.environ[env])
        except ValueError as error:
            raise ValueError(f"{env} must be an int, got {os.environ[env]!r}") from error
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{name} must be an int >= 0 or None, got {value!r}")
    return value


def process_shard(global_batch_size: int, mesh: Mesh | None = None) -> slice:
    """The examples `[start, stop)` of the global batch that this process feeds.

    Args:
      global_batch_size: examples per step over all processes.
      mesh: the training mesh; its devices decide the slice (default: the mesh of
        `make_mesh()`), so the slice matches what `global_batch` expects.

    Returns:
      `slice(start, stop)` along the batch axis.
    """
    mesh = make_mesh() if mesh is None else mesh
    sharding = batch_sharding(mesh, jax.ShapeDtypeStruct((global_batch_size,), np.float32))
    indices = sharding.addressable_devices_indices_map((global_batch_size,)).values()
    starts = sorted({i[0].indices(global_batch_size)[:2] for i in indices})
    start, stop = starts[0][0], starts[-1][1]
    if stop - start != sum(b - a for a, b in starts):
        raise ValueError(f"this process's devices hold no contiguous slice of the batch: {starts}")
    return slice(start, stop)


def global_batch(local_batch: Any, mesh: Mesh, axes: Any = 0) -> Any:
    """Assembles global arrays from each process's slice (`process_shard`) of the batch.

    Args:
      local_batch: this process's examples, leaves with the local batch size on
        their batch axis.
      mesh: the training mesh over the devices of all processes.
      axes: batch axis per leaf, an int or a pytree prefix (see `batch_sharding`).

    Returns:
      The global batch: leaves of `jax.Array` sharded over "data", global batch size
      = local size × number of processes.
    """
    count = jax.process_count()

    def one(path, axis, leaf):
        shape = list(np.shape(leaf))
        shape[axis] *= count
        sharding = batch_sharding(mesh, jax.ShapeDtypeStruct(tuple(shape), np.float32), axis)
        return jax.make_array_from_process_local_data(sharding, leaf, tuple(shape))

    return _map_axes(one, axes, local_batch)
