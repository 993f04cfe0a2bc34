"""The LSTM (Hochreiter & Schmidhuber 1997; Gers et al. 2000) and its ablations."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxseq import _checks, initializers
from jaxseq.cells import _common
from jaxseq.types import Cell, Initializer, PRNGKey, RecurrentMatmul


class LSTMParams(NamedTuple):
    """LSTM parameters, gates fused along the last axis in the documented order.

    `w_peep` holds the diagonal peephole weights `[3, H]` for (i, f, o), or None.
    """

    w_x: Float[Array, "in gates_hidden"]
    w_h: Float[Array, "hidden gates_hidden"]
    b: Float[Array, " gates_hidden"]
    w_peep: Float[Array, "3 hidden"] | None = None


class LSTMCarry(NamedTuple):
    """LSTM state: hidden `h` and cell ("context") state `c`, each `[*batch, H]`."""

    h: Float[Array, "*batch hidden"]
    c: Float[Array, "*batch hidden"]


def lstm(
    hidden_size: int,
    *,
    forget_bias: float | Initializer = 1.0,
    peephole: bool = False,
    forget_gate: bool = True,
    coupled: bool = False,
    gate_activation: str | _common.Activation = "sigmoid",
    activation: str | _common.Activation = "tanh",
    w_x_init: Initializer = initializers.glorot_uniform(),
    w_h_init: Initializer = initializers.orthogonal(),
    b_init: Initializer = initializers.zeros,
    peephole_init: Initializer = initializers.zeros,
    dtype=jnp.float32,
    compute_dtype=None,
) -> Cell:
    """Long short-term memory cell.

        i_t = σ(x_t W^i + h_{t-1} U^i [+ p^i ⊙ C_{t-1}] + b^i)     input gate
        f_t = σ(x_t W^f + h_{t-1} U^f [+ p^f ⊙ C_{t-1}] + b^f)     forget gate
        Ĉ_t = φ(x_t W^g + h_{t-1} U^g + b^g)                        candidate
        C_t = f_t ⊙ C_{t-1} + i_t ⊙ Ĉ_t                             additive cell update
        o_t = σ(x_t W^o + h_{t-1} U^o [+ p^o ⊙ C_t] + b^o)         output gate
        h_t = o_t ⊙ φ(C_t),    y_t = h_t

    σ is `gate_activation`, φ is `activation`; terms in brackets only with
    `peephole=True` (Gers & Schmidhuber 2000: the output gate peeks at C_t).

    Gate order in the fused weights: (i, f, g, o), as in PyTorch and Flax. With
    `forget_gate=False` (f ≡ 1, the original 1997 LSTM) or `coupled=True`
    (f = 1 − i, as in the CIFG variant) the forget block is absent: (i, g, o).

    Args:
      hidden_size: width H of h and C.
      forget_bias: a float added to the forget-gate block of the bias after
        `b_init` (1.0 is the unit forget bias of Jozefowicz et al. 2015; 0.0
        with `b_init=uniform_fan_in()` is PyTorch's default), or an initialiser
        of that block (e.g. `initializers.chrono(T)`). Ignored when there is no
        forget block (`forget_gate=False` or `coupled=True`).
      peephole: add diagonal peephole connections from the cell state.
      forget_gate: False removes the forget gate (f ≡ 1).
      coupled: True couples the gates, f = 1 − i.
      gate_activation: σ, default `"sigmoid"`.
      activation: φ for the candidate and the output, default `"tanh"`.
      w_x_init: initialiser of each W block `[in, H]` (default Glorot uniform).
      w_h_init: initialiser of each U block `[H, H]` (default orthogonal per gate).
      b_init: initialiser of each bias block `[H]` (default zeros).
      peephole_init: initialiser of the peephole weights `[3, H]` (default zeros).
      dtype: parameter dtype.
      compute_dtype: dtype of the matrix products (None: the parameter dtype).
        With `jnp.bfloat16` and float32 params, the input projection and the
        recurrent product take bfloat16 operands and accumulate in float32;
        params, the carry (h, C), the gates and the additive update of C stay
        float32 (see "Mixed precision" in README).

    Returns:
      A `Cell` with params `LSTMParams` and carry `LSTMCarry(h, c)`.

    References:
      Hochreiter & Schmidhuber 1997; Gers, Schmidhuber, Cummins 2000 (forget gate);
      Gers & Schmidhuber 2000 (peepholes); Greff et al. 2017, "LSTM: A search
      space odyssey" (ablations: no forget gate, coupled gates, peepholes).
    """
    if coupled and not forget_gate:
        raise ValueError("coupled=True needs forget_gate=True (f = 1 - i replaces the gate)")
    sigma = _common.activation("gate_activation", gate_activation)
    phi = _common.activation("activation", activation)
    has_f = forget_gate and not coupled
    gates = ("i", "f", "g", "o") if has_f else ("i", "g", "o")
    k = len(gates)

    def init(key: PRNGKey, input_size: int) -> LSTMParams:
        _checks.check_positive_int("input_size", input_size)
        k_x, k_h, k_b, k_f, k_p = jax.random.split(key, 5)
        b = initializers.fused(k_b, [b_init] * k, None, hidden_size, dtype)
        if has_f:
            sl = slice(hidden_size, 2 * hidden_size)
            if callable(forget_bias):
                b = b.at[sl].set(forget_bias(k_f, (hidden_size,), dtype))
            else:
                b = b.at[sl].add(forget_bias)
        return LSTMParams(
            w_x=initializers.fused(k_x, [w_x_init] * k, input_size, hidden_size, dtype),
            w_h=initializers.fused(k_h, [w_h_init] * k, hidden_size, hidden_size, dtype),
            b=b,
            w_peep=peephole_init(k_p, (3, hidden_size), dtype) if peephole else None,
        )

    def initial_carry(params: LSTMParams, batch_shape: tuple[int, ...]) -> LSTMCarry:
        h = _common.zero_state(params, batch_shape)
        return LSTMCarry(h=h, c=h)

    def combine(params: LSTMParams, carry: LSTMCarry, xp_t: jax.Array, hp_t: jax.Array):
        z = xp_t + hp_t  # hp_t = h_{t-1} @ w_h
        if peephole:  # i and f peek at C_{t-1}
            peep = _common.broadcast(params.w_peep, carry.c[..., None, :]) * carry.c[..., None, :]
            blocks = [peep[..., 0, :]] + [peep[..., 1, :]] * has_f + [jnp.zeros_like(carry.c)] * 2
            z = z + jnp.concatenate(blocks, axis=-1)
        # σ over all gate blocks at once, then split: on CPU, XLA vectorises an
        # activation of one contiguous block but not one per slice (2× per step)
        gate = dict(zip(gates, _common.split(sigma(z), k)))
        pre = dict(zip(gates, _common.split(z, k)))
        i = gate["i"]
        if has_f:
            f = gate["f"]
        elif coupled:
            f = 1.0 - i
        else:
            f = 1.0
        c_t = f * carry.c + i * phi(pre["g"])
        o = gate["o"]
        if peephole:  # o peeks at C_t
            o = sigma(pre["o"] + _common.broadcast(params.w_peep[2], c_t) * c_t)
        h_t = o * phi(c_t)
        return LSTMCarry(h=h_t, c=c_t), h_t

    name = (
        f"lstm(hidden_size={hidden_size}, peephole={peephole}, forget_gate={forget_gate}, "
        f"coupled={coupled}, gate_activation={gate_activation!r}, activation={activation!r})"
    )
    standard = has_f and not peephole and (gate_activation, activation) == ("sigmoid", "tanh")
    recurrent = RecurrentMatmul(
        weight=_common.weight_h,
        state=lambda c: c.h,
        combine=combine,
        additive=True,
        kernel="lstm" if standard else None,
    )
    return _common.make_cell(name, hidden_size, init, recurrent, initial_carry, compute_dtype)
