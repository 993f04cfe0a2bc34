"""Backpropagation through time for a whole sequence in one hand-written VJP.

Autodiff of `lax.scan` differentiates step by step: every backward step does
two small matrix products (∂h_{t-1} = ∂z_t Uᵀ and the weight's share
h_{t-1}ᵀ ∂z_t, accumulated in the loop). For a cell with a `RecurrentMatmul`
this module does what cuDNN's and oneDNN's RNN kernels do instead:

- forward: the scan saves each step's carry and recurrent product `hp_t`;
- backward: a reverse scan whose only matrix product is ∂state_{t-1} = ∂hp_t Wᵀ
  (the elementwise `combine` is differentiated by `jax.vjp`, recomputing its
  activations from the saved inputs);
- after the loop: ∂W = Σ_t state_{t-1}ᵀ ∂hp_t as one `[S, T·B] @ [T·B, K]`
  product, and ∂xp_t is returned to the hoisted input projection, whose own
  weight gradient autodiff also forms as one large product.

Reached through `jaxseq.unroll(..., bptt="fused")` (the default where the cell
has `cell.recurrent`). A `jax.custom_vjp` supports reverse mode only: forward-mode
autodiff (`jax.jvp`, `jax.jacfwd`, `jax.hessian`) needs `bptt="autodiff"`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxseq.cells import _common
from jaxseq.types import Carry, Cell, Params


def _masked(step: Callable, carry, xp_t, hp_t, valid_t, params):
    """`combine`, leaving the carry unchanged and emitting zeros where `valid_t` is False."""
    new_carry, y_t = step(params, carry, xp_t, hp_t)
    if valid_t is None:
        return new_carry, y_t
    keep = lambda m, n: m.reshape(m.shape + (1,) * (n.ndim - m.ndim))  # noqa: E731
    new_carry = jax.tree.map(lambda n, o: jnp.where(keep(valid_t, n), n, o), new_carry, carry)
    return new_carry, jnp.where(keep(valid_t, y_t), y_t, jnp.zeros_like(y_t))


def scan(
    cell: Cell,
    params: Params,
    xps,
    carry: Carry,
    valid: jax.Array | None,
    reverse: bool,
    unroll: int = 1,
) -> tuple[Carry, jax.Array]:
    """`lax.scan` of `cell.recur` over the hoisted projections `xps`, with the fused VJP.

    Args:
      cell: a cell with `cell.recurrent` (a `RecurrentMatmul`).
      params: its parameters.
      xps: `cell.project(params, xs)`, leaves `[T, *batch, ...]`.
      carry: the initial carry.
      valid: None, or bool `[T, *batch]`: False steps keep the carry and emit zeros.
      reverse: scan from the last step to the first.
      unroll: `lax.scan`'s unroll factor, for both loops.

    Returns:
      `(final_carry, ys)`, equal to the plain scan's.
    """
    spec = cell.recurrent

    def recurrent_weight(params):
        """The weight, cast once (outside the loops) to the compute dtype."""
        weight = spec.weight(params)
        return weight if spec.compute_dtype is None else weight.astype(spec.compute_dtype)

    def step(params, carry, xp_t, hp_t, valid_t):
        return _masked(spec.combine, carry, xp_t, hp_t, valid_t, params)

    def primal(params, xps, carry, valid):
        weight = recurrent_weight(params)

        def body(carry, inputs):
            xp_t, valid_t = inputs
            hp_t = _common.dot(spec.state(carry), weight, spec.compute_dtype)
            return step(params, carry, xp_t, hp_t, valid_t)

        return jax.lax.scan(body, carry, (xps, valid), reverse=reverse, unroll=unroll)

    def forward(params, xps, carry, valid):
        weight = recurrent_weight(params)

        def body(carry, inputs):
            xp_t, valid_t = inputs
            hp_t = _common.dot(spec.state(carry), weight, spec.compute_dtype)
            new_carry, y_t = step(params, carry, xp_t, hp_t, valid_t)
            return new_carry, (y_t, carry, hp_t)

        final, (ys, carries, hps) = jax.lax.scan(
            body, carry, (xps, valid), reverse=reverse, unroll=unroll
        )
        return (final, ys), (params, xps, carries, hps, valid)

    def backward(residuals, cotangents):
        params, xps, carries, hps, valid = residuals
        d_final, d_ys = cotangents
        weight_t = recurrent_weight(params).T

        def body(acc, inputs):
            d_carry, d_params = acc
            carry_tm1, xp_t, hp_t, valid_t, dy_t = inputs
            st = lambda p, c, xp, hp: step(p, c, xp, hp, valid_t)  # noqa: E731
            _, vjp = jax.vjp(st, params, carry_tm1, xp_t, hp_t)
            d_params_t, d_carry_tm1, d_xp, d_hp = vjp((d_carry, dy_t))
            _, state_vjp = jax.vjp(spec.state, carry_tm1)
            (d_state,) = state_vjp(_common.dot(d_hp, weight_t, spec.compute_dtype))
            d_carry_tm1 = jax.tree.map(jnp.add, d_carry_tm1, d_state)
            # combine's own parameters (biases, peepholes); the zeros added for the
            # weights it does not read are removed by XLA's simplifier
            d_params = jax.tree.map(jnp.add, d_params, d_params_t)
            return (d_carry_tm1, d_params), (d_xp, d_hp)

        acc = (d_final, jax.tree.map(jnp.zeros_like, params))
        inputs = (carries, xps, hps, valid, d_ys)
        (d_carry0, d_params_acc), (d_xps, d_hps) = jax.lax.scan(
            body, acc, inputs, reverse=not reverse, unroll=unroll
        )
        states = spec.state(carries)  # [T, *batch, S]
        d_weight = _common.dot(  # Σ_t state_{t-1}ᵀ ∂hp_t, one product over all steps
            states.reshape(-1, states.shape[-1]).T,
            d_hps.reshape(-1, d_hps.shape[-1]),
            spec.compute_dtype,
        )
        _, weight_vjp = jax.vjp(spec.weight, params)
        (d_params,) = weight_vjp(d_weight)
        d_params = jax.tree.map(jnp.add, d_params, d_params_acc)
        return d_params, d_xps, d_carry0, None

    @jax.custom_vjp
    def run(params, xps, carry, valid):
        return primal(params, xps, carry, valid)

    run.defvjp(forward, backward)
    return run(params, xps, carry, valid)
