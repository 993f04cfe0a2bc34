"""The gated recurrent unit (Cho et al. 2014) in both reset placements."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxseq import _checks, initializers
from jaxseq.cells import _common
from jaxseq.types import Cell, Initializer, PRNGKey, RecurrentMatmul


class GRUParams(NamedTuple):
    """GRU parameters, gates fused in the order (r, z, n).

    `b_hn` is the recurrent bias of the candidate, used inside the reset
    (`reset_after=True`, PyTorch/cuDNN), None otherwise.
    """

    w_x: Float[Array, "in gates_hidden"]
    w_h: Float[Array, "hidden gates_hidden"]
    b: Float[Array, " gates_hidden"]
    b_hn: Float[Array, " hidden"] | None = None


def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
    reset_gate: bool = True,
    gate_activation: str | _common.Activation = "sigmoid",
    activation: str | _common.Activation = "tanh",
    w_x_init: Initializer = initializers.glorot_uniform(),
    w_h_init: Initializer = initializers.orthogonal(),
    b_init: Initializer = initializers.zeros,
    dtype=jnp.float32,
    compute_dtype=None,
) -> Cell:
    """Gated recurrent unit.

        r_t = σ(x_t W^r + h_{t-1} U^r + b^r)                         reset gate
        z_t = σ(x_t W^z + h_{t-1} U^z + b^z)                         update gate
        n_t = φ(x_t W^n + b^n + r_t ⊙ (h_{t-1} U^n + b^n_h))         reset_after=True
        n_t = φ(x_t W^n + b^n + (r_t ⊙ h_{t-1}) U^n)                 reset_after=False
        h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1},    y_t = h_t

    `reset_after=True` is the PyTorch / cuDNN / Flax `GRUCell` form (one
    recurrent matmul per step); `reset_after=False` is the original form of
    Cho et al. 2014 (a second, dependent matmul). Gate order in the fused
    weights: (r, z, n); with `reset_gate=False` (r ≡ 1) the reset block is
    absent: (z, n). The carry is the array `h: [*batch, H]`.

    Args:
      hidden_size: width H of the state.
      reset_after: where the reset gate is applied (see above).
      reset_gate: False removes the reset gate (r ≡ 1).
      gate_activation: σ, default `"sigmoid"`.
      activation: φ for the candidate, default `"tanh"`.
      w_x_init: initialiser of each W block `[in, H]` (default Glorot uniform).
      w_h_init: initialiser of each U block `[H, H]` (default orthogonal per gate).
      b_init: initialiser of each bias block `[H]`, and of `b_hn` (default zeros).
      dtype: parameter dtype.
      compute_dtype: dtype of the matrix products (None: the parameter dtype).
        With `jnp.bfloat16` and float32 params, the input projection and the
        recurrent product take bfloat16 operands and accumulate in float32;
        params, the carry, the nonlinearities and the state update stay float32
        (see "Mixed precision" in README).

    Returns:
      A `Cell` with params `GRUParams(w_x, w_h, b, b_hn)`.

    References:
      Cho et al. 2014, "Learning phrase representations using RNN encoder-decoder";
      Chung et al. 2014, "Empirical evaluation of gated recurrent neural networks".
    """
    compute_dtype = _checks.check_compute_dtype(compute_dtype)
    sigma = _common.activation("gate_activation", gate_activation)
    phi = _common.activation("activation", activation)
    gates = ("r", "z", "n") if reset_gate else ("z", "n")
    k = len(gates)
    has_b_hn = reset_gate and reset_after
    hidden = hidden_size

    def init(key: PRNGKey, input_size: int) -> GRUParams:
        _checks.check_positive_int("input_size", input_size)
        k_x, k_h, k_b, k_bh = jax.random.split(key, 4)
        return GRUParams(
            w_x=initializers.fused(k_x, [w_x_init] * k, input_size, hidden, dtype),
            w_h=initializers.fused(k_h, [w_h_init] * k, hidden, hidden, dtype),
            b=initializers.fused(k_b, [b_init] * k, None, hidden, dtype),
            b_hn=b_init(k_bh, (hidden,), dtype) if has_b_hn else None,
        )

    def update(x: dict, h_tm1: jax.Array, hz: jax.Array, hn: jax.Array):
        z = sigma(x["z"] + hz)
        n = phi(x["n"] + hn)
        h_t = (1.0 - z) * n + z * h_tm1
        return h_t, h_t

    def recur(params: GRUParams, h_tm1: jax.Array, xp_t: jax.Array):
        """reset_after=False: the second matmul depends on r_t, so no `RecurrentMatmul`."""
        x = dict(zip(gates, _common.split(xp_t, k)))
        hr, hz = _common.split(_common.dot(h_tm1, params.w_h[:, : 2 * hidden], compute_dtype), 2)
        r = sigma(x["r"] + hr)
        hn = _common.dot(r * h_tm1, params.w_h[:, 2 * hidden :], compute_dtype)
        return update(x, h_tm1, hz, hn)

    def combine(params: GRUParams, h_tm1: jax.Array, xp_t: jax.Array, hp_t: jax.Array):
        # hp_t = h_{t-1} @ w_h. σ over the (r, z) blocks at once, then split: on CPU,
        # XLA vectorises an activation of one contiguous block but not one per slice
        gated = k - 1
        x_n, h_n = xp_t[..., gated * hidden :], hp_t[..., gated * hidden :]
        gate = _common.split(
            sigma(xp_t[..., : gated * hidden] + hp_t[..., : gated * hidden]), gated
        )
        z = gate[-1]
        if reset_gate:
            h_n = gate[0] * (h_n + _common.broadcast(params.b_hn, h_n))
        n = phi(x_n + h_n)
        h_t = (1.0 - z) * n + z * h_tm1
        return h_t, h_t

    name = (
        f"gru(hidden_size={hidden_size}, reset_after={reset_after}, reset_gate={reset_gate}, "
        f"gate_activation={gate_activation!r}, activation={activation!r})"
    )
    if reset_gate and not reset_after:
        return _common.make_cell(name, hidden_size, init, recur, compute_dtype=compute_dtype)
    standard = reset_gate and (gate_activation, activation) == ("sigmoid", "tanh")
    recurrent = RecurrentMatmul(
        weight=_common.weight_h,
        state=lambda h: h,
        combine=combine,
        kernel="gru" if standard else None,
    )
    return _common.make_cell(name, hidden_size, init, recurrent, compute_dtype=compute_dtype)
