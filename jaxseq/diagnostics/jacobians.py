"""Recurrent Jacobians along a trajectory: span norms, singular values, Lyapunov exponents.

    J_t = ∂carry_t / ∂carry_{t-1}      (flat carry, P × P; carry_{-1} the initial one)
    ∂carry_{T-1}/∂carry_t = J_{T-1} J_{T-2} ⋯ J_{t+1}

Pascanu, Mikolov, Bengio 2013: for h_t = f(h_{t-1} U + x_t W + b) with
|f'| ≤ γ, ‖∂h_{T-1}/∂h_t‖ ≤ (γ σ_max(U))^{T-1-t}, so gradients vanish when
σ_max(U) < 1/γ (γ = 1 for tanh, 1/4 for the sigmoid).
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxseq import _checks, initializers
from jaxseq.diagnostics import _trajectory
from jaxseq.types import Carry, Cell, Params

NORMS = ("spectral", "frobenius")


def recurrent_jacobians(
    cell: Cell,
    params: Params,
    xs: Float[Array, "time *batch in"],
    carry: Carry | None = None,
    *,
    lengths: Int[Array, "*batch"] | None = None,
) -> Float[Array, "time *batch state state"]:
    """J_t = ∂carry_t/∂carry_{t-1} at every step of the trajectory `cell` takes on `xs`.

    The carry is flattened to one vector of P = Σ leaf sizes (leaves in
    `jax.tree.leaves` order, for the LSTM `[h, c]`, P = 2H); `J_t[i, j]` =
    ∂carry_t[i]/∂carry_{t-1}[j]. Forward-mode (`jax.jacfwd`) of one step,
    vmapped over time and batch. With lengths, padded steps hold the carry, so
    their Jacobian is the identity.

    Args:
      cell: the `Cell`.
      params: its parameters.
      xs: inputs `[T, *batch, in]`.
      carry: initial state (default `cell.initial_carry`).
      lengths: optional valid lengths, int `[*batch]`.

    Returns:
      `[T, *batch, P, P]`.
    """
    carry = _trajectory.initial_carry(cell, params, xs, carry)
    valid = _trajectory.valid_steps(lengths, xs)
    before, _ = _trajectory.trajectory(cell, params, xs, carry)
    xps = cell.project(params, xs)

    def step(flat_tm1, xp_t):
        carry_t, _ = cell.recur(params, _trajectory.unflatten(flat_tm1, carry), xp_t)
        return _trajectory.flatten(carry_t)

    lead = tuple(xs.shape[:-1])
    size = before.shape[-1]
    flat_before = _trajectory.flat_leading(before, len(lead))
    flat_xps = _trajectory.flat_leading(xps, len(lead))
    jacobians = jax.vmap(jax.jacfwd(step))(flat_before, flat_xps).reshape(lead + (size, size))
    if valid is not None:
        eye = jnp.eye(size, dtype=jacobians.dtype).reshape((1,) * len(lead) + (size, size))
        jacobians = jnp.where(valid[..., None, None], jacobians, eye)
    return jacobians


def _check_square(name: str, w, min_rank: int = 2) -> None:
    shape = tuple(getattr(w, "shape", ()))
    if len(shape) < min_rank or shape[-1] != shape[-2]:
        raise ValueError(f"{name} must have shape [..., n, n] (square), got shape {shape}")


def jacobian_products(
    jacobians: Float[Array, "time *batch state state"],
) -> Float[Array, "time *batch state state"]:
    """∂carry_{T-1}/∂carry_t = J_{T-1} ⋯ J_{t+1} for every t (the identity at t = T−1).

    Args:
      jacobians: `[T, *batch, P, P]` from `recurrent_jacobians`.

    Returns:
      `[T, *batch, P, P]`; entry t maps a change of carry_t to the final carry.
    """
    _check_square("jacobians", jacobians, min_rank=3)
    eye = jnp.broadcast_to(jnp.eye(jacobians.shape[-1], dtype=jacobians.dtype), jacobians.shape[1:])

    def body(product, jacobian_t):  # read backwards: output ∂c_{T-1}/∂c_t, then fold in J_t
        return product @ jacobian_t, product

    _, products = jax.lax.scan(body, eye, jacobians, reverse=True)
    return products


def jacobian_product_norms(
    jacobians: Float[Array, "time *batch state state"], *, norm: str = "spectral"
) -> Float[Array, " time *batch"]:
    """‖∂carry_{T-1}/∂carry_t‖ for every t: how much of a change at t survives to the end.

    Products of many contracting (expanding) Jacobians under- (over-)flow in
    float32 after a few hundred steps; `state_grad_norms` measures the same
    decay of one gradient without forming the products.

    Args:
      jacobians: `[T, *batch, P, P]` from `recurrent_jacobians`.
      norm: "spectral" (largest singular value, the default) or "frobenius".

    Returns:
      `[T, *batch]` (1 at t = T−1 for the spectral norm).
    """
    _checks.check_option("norm", norm, NORMS)
    products = jacobian_products(jacobians)
    if norm == "frobenius":
        return jnp.sqrt(jnp.sum(jnp.square(products), axis=(-2, -1)))
    return jnp.linalg.svd(products, compute_uv=False)[..., 0]


def jacobian_singular_values(
    jacobians: Float[Array, "time *batch state state"],
) -> Float[Array, "time *batch state"]:
    """Singular values of every J_t, largest first: `[T, *batch, P]`."""
    _check_square("jacobians", jacobians, min_rank=3)
    return jnp.linalg.svd(jacobians, compute_uv=False)


def lyapunov_exponents(
    jacobians: Float[Array, "time *batch state state"],
    *,
    lengths: Int[Array, "*batch"] | None = None,
) -> Float[Array, "*batch state"]:
    """Lyapunov exponents of the trajectory by the QR method, largest first.

        Q_{-1} = I;   Q_t R_t = J_t Q_{t-1}   (QR);   λ_i = (1/T) Σ_t log |(R_t)_ii|

    the average log growth rate per step along each direction (Benettin et al.
    1980; Vogt et al. 2022 for RNNs). For a constant J they tend to log |eig(J)|
    as T grows; λ_1 > 0 means perturbations grow (chaos, exploding gradients),
    λ_1 < 0 that they die out. With lengths, example b averages over its first
    lengths[b] steps.

    Args:
      jacobians: `[T, *batch, P, P]` from `recurrent_jacobians`.
      lengths: optional valid lengths, int `[*batch]`.

    Returns:
      `[*batch, P]`, sorted in decreasing order.
    """
    _check_square("jacobians", jacobians, min_rank=3)
    num_steps, batch_shape = jacobians.shape[0], tuple(jacobians.shape[1:-2])
    eye = jnp.broadcast_to(jnp.eye(jacobians.shape[-1], dtype=jacobians.dtype), jacobians.shape[1:])

    def body(q_tm1, jacobian_t):
        q_t, r_t = jnp.linalg.qr(jacobian_t @ q_tm1)
        return q_t, jnp.log(jnp.abs(jnp.diagonal(r_t, axis1=-2, axis2=-1)))

    _, logs = jax.lax.scan(body, eye, jacobians)  # [T, *batch, P]
    if lengths is None:
        steps = jnp.full(batch_shape, num_steps, jacobians.dtype)
    else:
        _checks.check_lengths(lengths, num_steps, batch_shape)
        t = jnp.arange(num_steps, dtype=jnp.int32).reshape((-1,) + (1,) * (len(batch_shape) + 1))
        valid = t < jnp.asarray(lengths, jnp.int32)[None, ..., None]
        logs = jnp.where(valid, logs, jnp.zeros_like(logs))
        steps = jnp.maximum(lengths, 1).astype(jacobians.dtype)
    exponents = jnp.sum(logs, axis=0) / steps[..., None]
    return jnp.flip(jnp.sort(exponents, axis=-1), axis=-1)


def spectral_radius(w: Float[Array, "*stack n n"]) -> Float[Array, "*stack"]:
    """ρ(U) = max |eigenvalue| of a square (recurrent) weight `[..., n, n]`.

    Eigenvalues of a non-symmetric matrix are computed on the host (LAPACK,
    through `jax.pure_callback`, as in `jaxseq.initializers.spectral_radius`),
    so this works under `jit` and `vmap` on every backend. For fused gate
    weights `[H, k·H]` pass one block, e.g. `jnp.split(params.w_h, 4, axis=-1)[1]`.
    """
    _check_square("w", w)
    return initializers.spectral_radius(w)


def max_singular_value(w: Float[Array, "*stack m n"]) -> Float[Array, "*stack"]:
    """σ_max(U), the spectral norm of a weight `[..., m, n]` (any shape, fused gates too)."""
    shape = tuple(getattr(w, "shape", ()))
    if len(shape) < 2:
        raise ValueError(f"w must have shape [..., m, n] (rank >= 2), got shape {shape}")
    return jnp.linalg.svd(w, compute_uv=False)[..., 0]
