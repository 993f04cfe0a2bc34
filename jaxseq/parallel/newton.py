"""DEER: a non-linear recurrence solved as a fixed point of the whole trajectory by Newton.

The T states of h_t = f(h_{t-1}, x_t) are the root of the residual
r_t(h) = h_t − f(h_{t-1}, x_t). Newton's method linearises f at the current
guess h^(k) and solves the resulting *linear* recurrence exactly:

    J_t = ∂f/∂h (h^(k)_{t-1}, x_t)
    h^(k+1)_t = J_t h^(k+1)_{t-1} + (f(h^(k)_{t-1}, x_t) − J_t h^(k)_{t-1})

with one associative scan (`matrix_scan`, O(log T) depth). Replacing J_t by its
diagonal gives the quasi-Newton variant of ELK (Gonzalez et al. 2024, without
its damping): an elementwise scan, O(n) memory per step instead of O(n²), more
iterations. Either way, after k iterations the first k states are exact, so
the iteration ends within T steps in exact arithmetic; for contractive cells it
typically converges in a handful. It stops when the largest relative update
max |Δh| / (1 + |h|) falls to `tol` or after `max_iters` iterations; if it has
not converged, the sequential scan (`lax.cond`) gives the result instead. The
iterations run their matrix products at full float32 precision ("highest"): with
TF32 (a GPU's default) the residual is too coarse for a tolerance near 1e-5.

Gradients (`jax.custom_vjp`): at the solution, the adjoint of the recurrence
λ_t = ḡ_t + J_{t+1}ᵀ λ_{t+1} is again linear. With `jacobian="full"` it is
solved by a reverse `matrix_scan` (parallel, exact); with `"diag"` by a reverse
sequential scan of per-step VJPs (ordinary BPTT, exact). Parameter and input
gradients then come from one VJP of f over all steps at once.

The carry pytree (an LSTM's `(h, c)`) is concatenated into one vector of n
numbers per example. Cost: every iteration takes n JVPs of f over all steps
(the Jacobian), and "full" stores `[T, *batch, n, n]`: meant for small n.

References:
  Lim, Zhu, Selfridge, Kasim 2024, "Parallelizing non-linear sequential models
    over the sequence length" (DEER, ICLR 2024).
  Gonzalez, Warrington, Smith, Linderman 2024, "Towards scalable and stable
    parallelization of nonlinear RNNs" (ELK, quasi-DEER).
"""

import functools
import itertools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from jaxseq import _masking as masking
from jaxseq.parallel.scan import linear_scan, matrix_scan
from jaxseq.types import Carry, Cell, Params
from jaxseq.unroll import _evaluate

_DIAG_CHUNK = 32  # Jacobian columns computed at once for jacobian="diag"


class DeerInfo(NamedTuple):
    """How the Newton iteration went (scalars; under `vmap`, one per mapped example).

    Attributes:
      iterations: Newton iterations taken.
      converged: whether the last update met the tolerance.
      error: the last relative update, max |Δh| / (1 + |h|) (inf before any).
      fell_back: whether the sequential scan produced the returned result.
    """

    iterations: Int[Array, ""]
    converged: Bool[Array, ""]
    error: Float[Array, ""]
    fell_back: Bool[Array, ""]


class Options(NamedTuple):
    max_iters: int
    tol: float
    jacobian: str
    fallback: bool


Step = Callable[[Params, jax.Array, object, jax.Array | None], jax.Array]


def _flat_step(cell: Cell, carry: Carry) -> tuple[Step, Callable, Callable]:
    """The cell's recurrent part on one flat state vector `[..., n]`, with masking.

    Returns `(step, flatten, unflatten)`; `step(params, h_prev, xp, valid)` acts on
    any leading shape, and a step with `valid` false returns `h_prev` unchanged.
    """
    leaves, tree = jax.tree.flatten(carry)
    dtypes = {leaf.dtype for leaf in leaves}
    if len(dtypes) != 1:
        raise ValueError(
            f"method='deer' needs carry leaves of one dtype, got {sorted(map(str, dtypes))}"
        )
    sizes = [leaf.shape[-1] for leaf in leaves]
    splits = list(itertools.accumulate(sizes))[:-1]

    def flatten(c: Carry) -> jax.Array:
        return jnp.concatenate(jax.tree.leaves(c), axis=-1)

    def unflatten(h: jax.Array) -> Carry:
        return jax.tree.unflatten(tree, jnp.split(h, splits, axis=-1))

    def step(params, h_prev, xp, valid):
        new, _ = cell.recur(params, unflatten(h_prev), xp)
        h = flatten(new)
        if valid is None:
            return h
        return masking.keep(valid, h, h_prev)

    return step, flatten, unflatten


def _shift(hs: jax.Array, h_0: jax.Array) -> jax.Array:
    """h_{t-1} for every t: `[h_0, hs[0], ..., hs[T-2]]`."""
    return jnp.concatenate([h_0[None], hs[:-1]], axis=0)


def _jacobian(fn: Callable, h: jax.Array, jacobian: str) -> tuple[jax.Array, jax.Array]:
    """`fn(h)` and its Jacobian per position: `[..., n, n]` ("full") or its diagonal `[..., n]`."""
    f, jvp = jax.linearize(fn, h)
    n = h.shape[-1]
    basis = jnp.eye(n, dtype=h.dtype)

    def column(j):  # ∂f/∂h_j at every position, [..., n]
        return jvp(jnp.broadcast_to(basis[j].reshape((1,) * (h.ndim - 1) + (n,)), h.shape))

    if jacobian == "full":
        return f, jnp.moveaxis(jax.vmap(column)(jnp.arange(n)), 0, -1)
    diag = jax.lax.map(lambda j: column(j)[..., j], jnp.arange(n), batch_size=min(n, _DIAG_CHUNK))
    return f, jnp.moveaxis(diag, 0, -1)


def _newton_step(fn: Callable, h_prev: jax.Array, jacobian: str) -> jax.Array:
    """Solves the recurrence linearised at `h_prev` (h_prev[0] = h_0 is exact) in one scan."""
    f, jac = _jacobian(fn, h_prev, jacobian)
    if jacobian == "full":
        offset = f - jnp.matmul(jac, h_prev[..., None], precision="highest")[..., 0]
        offset = offset.at[0].set(f[0])  # s_{-1} = 0 in the scan: step 0 is f(h_0, x_0)
        return matrix_scan(jac, offset)
    offset = (f - jac * h_prev).at[0].set(f[0])
    return linear_scan(jac, offset)


def _sequential(step: Step, params, xps, h_0, valid) -> jax.Array:
    """The fallback: the same step function, one time step after another."""

    def body(h, inputs):
        xp_t, valid_t = inputs
        h = step(params, h, xp_t, valid_t)
        return h, h

    return jax.lax.scan(body, h_0, (xps, valid))[1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _solve(step: Step, options: Options, params, xps, h_0, valid):
    """`(hs [T, *batch, n], DeerInfo)`: the trajectory from h_0, by Newton (or the fallback)."""
    fn = lambda h_prev: step(params, h_prev, xps, valid)  # noqa: E731  (all steps at once)
    guess = jnp.broadcast_to(h_0[None], (jax.tree.leaves(xps)[0].shape[0], *h_0.shape))

    def keep_going(state):
        k, _, error = state
        return (k < options.max_iters) & (error > options.tol)  # a NaN error stops too

    def newton(state):
        k, hs, _ = state
        new = _newton_step(fn, _shift(hs, h_0), options.jacobian)
        error = jnp.max(jnp.abs(new - hs) / (1.0 + jnp.abs(new)))
        return k + 1, new, error

    start = (jnp.int32(0), guess, jnp.array(jnp.inf, h_0.dtype))
    with jax.default_matmul_precision("highest"):  # TF32 residuals (GPU default) stall near 1e-4
        iterations, hs, error = jax.lax.while_loop(keep_going, newton, start)
    converged = error <= options.tol
    fell_back = jnp.logical_not(converged) & options.fallback
    if options.fallback:
        hs = jax.lax.cond(converged, lambda: hs, lambda: _sequential(step, params, xps, h_0, valid))
    return hs, DeerInfo(iterations, converged, error, fell_back)


def _solve_fwd(step, options, params, xps, h_0, valid):
    hs, info = _solve(step, options, params, xps, h_0, valid)
    return (hs, info), (params, xps, h_0, valid, hs)


def _solve_bwd(step, options, residuals, cotangents):
    params, xps, h_0, valid, hs = residuals
    g_hs = cotangents[0]  # the info outputs carry no gradient
    h_prev = _shift(hs, h_0)
    _, vjp = jax.vjp(lambda p, x, h: step(p, h, x, valid), params, xps, h_prev)
    if options.jacobian == "full":
        _, jac = _jacobian(lambda h: step(params, h, xps, valid), h_prev, "full")
        # λ_t = ḡ_t + J_{t+1}ᵀ λ_{t+1}, λ_T = 0: a reverse scan with A_t = J_{t+1}ᵀ.
        a = jnp.concatenate([jnp.swapaxes(jac[1:], -1, -2), jnp.zeros_like(jac[:1])], axis=0)
        adjoint = matrix_scan(a, g_hs, reverse=True)
    else:
        adjoint = _adjoint_scan(step, params, xps, h_prev, valid, g_hs)
    d_params, d_xps, d_h_prev = vjp(adjoint)
    return d_params, d_xps, d_h_prev[0], None


def _adjoint_scan(step: Step, params, xps, h_prev, valid, g_hs) -> jax.Array:
    """λ_t = ḡ_t + J_{t+1}ᵀ λ_{t+1} by a reverse sequential scan of per-step VJPs (BPTT)."""

    def body(pulled, inputs):  # pulled = J_{t+1}ᵀ λ_{t+1}
        g_t, h_prev_t, xp_t, valid_t = inputs
        adjoint_t = g_t + pulled
        _, vjp_t = jax.vjp(lambda h: step(params, h, xp_t, valid_t), h_prev_t)
        return vjp_t(adjoint_t)[0], adjoint_t

    zeros = jnp.zeros_like(h_prev[0])
    return jax.lax.scan(body, zeros, (g_hs, h_prev, xps, valid), reverse=True)[1]


_solve.defvjp(_solve_fwd, _solve_bwd)


def evaluate(
    cell: Cell, params: Params, xps, carry: Carry, valid: jax.Array | None, options: Options
) -> tuple[Carry, jax.Array, DeerInfo]:
    """All steps of any cell by DEER, reading forwards.

    Args:
      cell: the `Cell`.
      params: its parameters.
      xps: the hoisted projection of every step, leaves `[T, *batch, ...]`.
      carry: the initial carry, leaves `[*batch, ...]`.
      valid: bool `[T, *batch]` (steps inside each sequence's length) or None.
      options: iteration limit, tolerance, Jacobian kind, fallback.

    Returns:
      `(final_carry, ys, info)` with `ys: [T, *batch, H]`, zeros at padded steps.
    """
    step, flatten, unflatten = _flat_step(cell, carry)
    h_0 = flatten(carry)
    hs, info = _solve(step, options, params, xps, h_0, valid)
    _, ys = cell.recur(params, unflatten(_shift(hs, h_0)), xps)  # every y_t at once
    if valid is not None:
        ys = masking.zero(valid, ys)
    return unflatten(hs[-1]), ys, info


def deer(
    cell: Cell,
    params: Params,
    xs: Float[Array, "time *batch in"],
    carry: Carry | None = None,
    *,
    lengths: Int[Array, "*batch"] | None = None,
    reverse: bool = False,
    max_iters: int = 100,
    tol: float = 1e-5,
    jacobian: str = "full",
    fallback: bool = True,
) -> tuple[Carry, Float[Array, "time *batch hidden"], DeerInfo]:
    """`unroll(cell, params, xs, carry, method="deer", ...)`, also reporting the iterations.

    Newton iterations on the whole trajectory (see the module docstring):

        h^(0)_t = h_0 for every t
        repeat: linearise f at h^(k), solve the linear recurrence by a parallel scan
        until max |h^(k+1) − h^(k)| / (1 + |h^(k+1)|) ≤ tol, or max_iters iterations

    Args:
      cell: the `Cell` (any: Elman, LSTM, GRU, ...).
      params: the cell's parameters.
      xs: inputs `[T, *batch, in]`, time-major.
      carry: initial state; zeros from `cell.initial_carry` when None.
      lengths: optional valid lengths, int `[*batch]` (as in `unroll`).
      reverse: read the sequences backwards (as in `unroll`).
      max_iters: most Newton iterations.
      tol: convergence tolerance on the largest relative update.
      jacobian: "full" (Newton: quadratic convergence, `[n, n]` per step) or
        "diag" (quasi-Newton with the Jacobian's diagonal, as in ELK: `[n]` per step).
      fallback: if not converged, return the sequential scan's result (True) or
        the last iterate (False; `info.converged` says whether to trust it).

    Returns:
      `(final_carry, ys, info)`: as `unroll`, plus a `DeerInfo`.
    """
    if not isinstance(fallback, bool):
        raise TypeError(f"fallback must be a bool, got {fallback!r}")
    options = dict(max_iters=max_iters, tol=tol, jacobian=jacobian, fallback=fallback)
    carry, ys, info = _evaluate(
        cell,
        params,
        xs,
        carry,
        lengths=lengths,
        reverse=reverse,
        method="deer",
        deer_options=options,
    )
    if info is None:  # no time steps: nothing to solve
        info = DeerInfo(jnp.int32(0), jnp.bool_(True), jnp.zeros((), ys.dtype), jnp.bool_(False))
    return carry, ys, info
