"""Carry plumbing shared by the diagnostics: flat carries, the state trajectory, probes.

A carry is a pytree whose leaves are `[*batch, n_k]` arrays of one dtype; the
diagnostics often need it as one array `[*batch, P]`, P = Σ n_k, the leaves
concatenated in `jax.tree.leaves` order (for the LSTM: `[h, c]`). Every helper
here runs the cell through `jaxseq.unroll` (the one scan) by wrapping it in
another `Cell`, never with a scan of its own.
"""

import math

import jax
import jax.numpy as jnp

from jaxseq import _checks
from jaxseq.types import Carry, Cell, Params
from jaxseq.unroll import unroll


def leaf_sizes(carry: Carry) -> tuple[int, ...]:
    """The last-axis size of every carry leaf, in `jax.tree.leaves` order."""
    return tuple(leaf.shape[-1] for leaf in jax.tree.leaves(carry))


def flatten(carry: Carry) -> jax.Array:
    """The carry's leaves concatenated along the last axis: `[..., P]`."""
    leaves = jax.tree.leaves(carry)
    dtypes = {leaf.dtype for leaf in leaves}
    if len(dtypes) != 1:
        raise TypeError(f"carry leaves must share one dtype, got {sorted(map(str, dtypes))}")
    return leaves[0] if len(leaves) == 1 else jnp.concatenate(leaves, axis=-1)


def split(flat: jax.Array, sizes: tuple[int, ...]) -> list[jax.Array]:
    """`[..., P]` -> one array `[..., n_k]` per size."""
    cuts = [sum(sizes[: k + 1]) for k in range(len(sizes) - 1)]
    return jnp.split(flat, cuts, axis=-1)


def unflatten(flat: jax.Array, like: Carry) -> Carry:
    """Inverse of `flatten`: `[..., P]` -> a carry shaped like `like` (any leading shape)."""
    leaves, treedef = jax.tree.flatten(like)
    return jax.tree.unflatten(treedef, split(flat, leaf_sizes(leaves)))


def initial_carry(cell: Cell, params: Params, xs: jax.Array, carry: Carry | None) -> Carry:
    """Checks `xs` (and `carry`) and returns the carry a run starts from."""
    _checks.check_inputs(cell, params, xs, name="xs", time_axis=True)
    batch_shape = tuple(xs.shape[1:-1])
    if carry is None:
        return cell.initial_carry(params, batch_shape)
    _checks.check_carry(cell, params, carry, batch_shape)
    return carry


def valid_steps(lengths: jax.Array | None, xs: jax.Array) -> jax.Array | None:
    """`[T, *batch]` booleans, t < lengths[b], or None without lengths (after checking them)."""
    if lengths is None:
        return None
    batch_shape = tuple(xs.shape[1:-1])
    _checks.check_lengths(lengths, xs.shape[0], batch_shape)
    t = jnp.arange(xs.shape[0], dtype=jnp.int32).reshape((-1,) + (1,) * len(batch_shape))
    return t < jnp.asarray(lengths, jnp.int32)[None]


def trajectory(cell: Cell, params: Params, xs: jax.Array, carry: Carry) -> tuple:
    """The flat states before and after every step, each `[T, *batch, P]`.

    `after[t]` is the carry after reading `xs[t]`; `before[t]` the one it read
    (`before[0]` is `carry`). Without lengths: a valid step never depends on
    later (padded) inputs, so callers mask padded steps themselves.
    """

    def recur(params, carry_tm1, xp_t):
        carry_t, _ = cell.recur(params, carry_tm1, xp_t)
        return carry_t, flatten(carry_t)

    emitting = cell._replace(
        name=f"trajectory({cell.name})", recur=recur, linear=None, recurrent=None
    )
    _, after = unroll(emitting, params, xs, carry)
    before = jnp.concatenate([flatten(carry)[None], after[:-1]], axis=0)
    return before[: xs.shape[0]], after


def probed(cell: Cell) -> Cell:
    """`cell` with a probe p_t added to the carry after every step.

    The probe rides along the input: the wrapped cell reads `[x_t, p_t]`
    (`[*batch, in + P]`) and its step is

        carry_t, y_t = cell.recur(params, carry_{t-1}, project(x_t))
        carry_t ← carry_t + p_t
        y_t ← the probed output (see below)

    so ∂L/∂p_t = ∂L/∂carry_t, and with p = 0 nothing changes. The output sees the
    probe when it is one of the carry leaves (Elman, LSTM's h, GRU, minGRU,
    minLSTM: the same array object) or, for cells with a `LinearRecurrence`
    (LRU), through its `readout`. Otherwise (a custom cell whose output is some
    other function of the state) the probe reaches only the later steps.
    """

    def sizes(params) -> tuple[int, ...]:
        return leaf_sizes(jax.eval_shape(lambda p: cell.initial_carry(p, ()), params))

    def project(params, x):
        n = cell.input_size(params)
        return cell.project(params, x[..., :n]), x[..., n:]

    def recur(params, carry_tm1, xp_and_probe):
        xp_t, probe_t = xp_and_probe
        carry_t, y_t = cell.recur(params, carry_tm1, xp_t)
        leaves, treedef = jax.tree.flatten(carry_t)
        pieces = split(probe_t, leaf_sizes(leaves))
        probed_leaves = [leaf + p.astype(leaf.dtype) for leaf, p in zip(leaves, pieces)]
        probed_carry = jax.tree.unflatten(treedef, probed_leaves)
        same = [k for k, leaf in enumerate(leaves) if leaf is y_t]
        if same:
            y_t = probed_leaves[same[0]]
        elif cell.linear is not None:
            state = cell.linear.to_state(params, probed_carry)
            _, y_t = cell.linear.readout(params, state, xp_t)
        return probed_carry, y_t

    return cell._replace(
        name=f"probed({cell.name})",
        project=project,
        recur=recur,
        input_size=lambda params: cell.input_size(params) + sum(sizes(params)),
        linear=None,
        recurrent=None,
    )


def flat_leading(tree, num: int):
    """Merges the first `num` axes of every leaf into one."""
    return jax.tree.map(lambda a: a.reshape((math.prod(a.shape[:num]),) + a.shape[num:]), tree)
