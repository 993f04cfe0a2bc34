"""Backpropagation through time for a whole sequence in one hand-written VJP.

Autodiff of `lax.scan` differentiates step by step: every backward step does
two small matrix products (∂h_{t-1} = ∂z_t Uᵀ and the weight's share
h_{t-1}ᵀ ∂z_t, accumulated in the loop). For a cell with a `RecurrentMatmul`
this module does what cuDNN's and oneDNN's RNN kernels do instead:

- forward: the scan saves each step's carry and recurrent product `hp_t` (for an
  additive cell, only the pre-activation `xp_t + hp_t`);
- backward: a reverse scan whose only matrix product is ∂state_{t-1} = ∂hp_t Uᵀ
  (the elementwise `combine` is differentiated by `jax.vjp`, recomputing its
  activations from the saved inputs);
- after the loop: ∂U = Σ_t state_{t-1}ᵀ ∂hp_t as one `[S, T·B] @ [T·B, K]`
  product, and the input projection's VJP (∂W, ∂b, ∂xs) runs once on all
  steps' ∂xp_t.

The input projection `xp_t = cell.project(params, x_t)` is either hoisted (one
product for all steps before the loop) or computed inside the loop
(`hoist=False`). On a CPU the hoisted `[T, *batch, K]` array costs more than the
one large product saves (each call maps fresh memory for it and page-faults it
in; benchmarks/speed.py), so `unroll` does not hoist there by default.

Reached through `jaxseq.unroll(..., bptt="fused")` (the default where the cell
has `cell.recurrent`). A `jax.custom_vjp` supports reverse mode only: forward-mode
autodiff (`jax.jvp`, `jax.jacfwd`, `jax.hessian`) needs `bptt="autodiff"`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxseq import _masking as masking
from jaxseq.cells import _common
from jaxseq.types import Carry, Cell, Params


def _masked(step: Callable, carry, xp_t, hp_t, valid_t, params):
    """`combine`, leaving the carry unchanged and emitting zeros where `valid_t` is False.

    `xp_t=None` stands for an additive cell's step whose `hp_t` is `xp_t + hp_t`.
    """
    if xp_t is None:
        new_carry, y_t = step(params, carry, hp_t, jnp.zeros_like(hp_t))
    else:
        new_carry, y_t = step(params, carry, xp_t, hp_t)
    if valid_t is None:
        return new_carry, y_t
    return masking.keep(valid_t, new_carry, carry), masking.zero(valid_t, y_t)


def scan(
    cell: Cell,
    params: Params,
    xs: jax.Array,
    carry: Carry,
    valid: jax.Array | None,
    reverse: bool,
    unroll: int = 1,
    hoist: bool = True,
) -> tuple[Carry, jax.Array]:
    """`lax.scan` of `cell.step` over `xs`, with the sequence-level VJP.

    Args:
      cell: a cell with `cell.recurrent` (a `RecurrentMatmul`).
      params: its parameters.
      xs: the inputs `[T, *batch, in]`.
      carry: the initial carry.
      valid: None, or bool `[T, *batch]`: False steps keep the carry and emit zeros.
      reverse: scan from the last step to the first.
      unroll: `lax.scan`'s unroll factor, for both loops.
      hoist: project all steps' inputs in one product before the loop (True), or
        each step's inside it (False).

    Returns:
      `(final_carry, ys)`, equal to the plain scan's.
    """
    spec = cell.recurrent

    def recurrent_weight(params):
        """The weight, cast once (outside the loops) to the compute dtype."""
        weight = spec.weight(params)
        return weight if spec.compute_dtype is None else weight.astype(spec.compute_dtype)

    def loop(params, xs, carry, valid, save: bool):
        """The forward scan; with `save`, also each step's carry and (pre-)activation."""
        weight = recurrent_weight(params)
        inputs = cell.project(params, xs) if hoist else xs

        def body(carry, inputs):
            x_t, valid_t = inputs
            xp_t = x_t if hoist else cell.project(params, x_t)
            hp_t = _common.dot(spec.state(carry), weight, spec.compute_dtype)
            if spec.additive:  # one array per step suffices: z_t = xp_t + hp_t
                xp_t, hp_t = None, xp_t + hp_t
            new_carry, y_t = _masked(spec.combine, carry, xp_t, hp_t, valid_t, params)
            return new_carry, ((y_t, carry, xp_t, hp_t) if save else y_t)

        return jax.lax.scan(body, carry, (inputs, valid), reverse=reverse, unroll=unroll)

    def forward(params, xs, carry, valid):
        final, (ys, carries, xps, hps) = loop(params, xs, carry, valid, save=True)
        return (final, ys), (params, xs, carries, xps, hps, valid)

    def backward(residuals, cotangents):
        params, xs, carries, xps, hps, valid = residuals
        d_final, d_ys = cotangents
        weight_t = recurrent_weight(params).T

        def body(acc, inputs):
            d_carry, d_params = acc
            carry_tm1, xp_t, hp_t, valid_t, dy_t = inputs
            st = lambda p, c, xp, hp: _masked(spec.combine, c, xp, hp, valid_t, p)  # noqa: E731
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
        (d_carry0, d_params), (d_xps, d_hps) = jax.lax.scan(
            body, acc, inputs, reverse=not reverse, unroll=unroll
        )
        states = spec.state(carries)  # [T, *batch, S]
        d_weight = _common.dot(  # Σ_t state_{t-1}ᵀ ∂hp_t, one product over all steps
            states.reshape(-1, states.shape[-1]).T,
            d_hps.reshape(-1, d_hps.shape[-1]),
            spec.compute_dtype,
        )
        _, weight_vjp = jax.vjp(spec.weight, params)
        _, project_vjp = jax.vjp(cell.project, params, xs)  # all steps at once
        d_params_w, d_params_x_and_xs = (
            weight_vjp(d_weight),
            project_vjp(d_hps if spec.additive else d_xps),
        )
        d_params_x, d_xs = d_params_x_and_xs
        d_params = jax.tree.map(lambda a, b, c: a + b + c, d_params, d_params_w[0], d_params_x)
        return d_params, d_xs, d_carry0, None

    @jax.custom_vjp
    def run(params, xs, carry, valid):
        return loop(params, xs, carry, valid, save=False)

    run.defvjp(forward, backward)
    return run(params, xs, carry, valid)
