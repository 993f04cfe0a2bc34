"""The gated recurrent unit (Cho et al. 2014) in both reset placements."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxseq import _checks, initializers
from jaxseq.cells import _common
from jaxseq.types import Cell, Initializer, PRNGKey


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

    Returns:
      A `Cell` with params `GRUParams(w_x, w_h, b, b_hn)`.

    References:
      Cho et al. 2014, "Learning phrase representations using RNN encoder-decoder";
      Chung et al. 2014, "Empirical evaluation of gated recurrent neural networks".
    """
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

    def recur(params: GRUParams, h_tm1: jax.Array, xp_t: jax.Array):
        x = dict(zip(gates, _common.split(xp_t, k)))
        if reset_gate and not reset_after:
            hr, hz = _common.split(h_tm1 @ params.w_h[:, : 2 * hidden], 2)
            r = sigma(x["r"] + hr)
            hn = (r * h_tm1) @ params.w_h[:, 2 * hidden :]
        else:
            h = dict(zip(gates, _common.split(h_tm1 @ params.w_h, k)))
            hz = h["z"]
            hn = h["n"]
            if reset_gate:
                hn = sigma(x["r"] + h["r"]) * (hn + _common.broadcast(params.b_hn, hn))
        z = sigma(x["z"] + hz)
        n = phi(x["n"] + hn)
        h_t = (1.0 - z) * n + z * h_tm1
        return h_t, h_t

    name = (
        f"gru(hidden_size={hidden_size}, reset_after={reset_after}, reset_gate={reset_gate}, "
        f"gate_activation={gate_activation!r}, activation={activation!r})"
    )
    return _common.make_cell(name, hidden_size, init, recur)
