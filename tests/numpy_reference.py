"""An independent float64 NumPy reference for every cell, written from the equations.

Nothing here imports jaxseq: the fused parameters are sliced into one matrix per
gate using the gate order the cells document, so a fused-layout or gate-order bug
in the library shows up as a mismatch.

    Elman    h_t = f(x_t W + h_{t-1} U + b)
    LSTM     gates (i, f, g, o); (i, g, o) with forget_gate=False or coupled=True
    GRU      gates (r, z, n); (z, n) with reset_gate=False
    minGRU   gates (z, h̃), no recurrent weights (Feng et al. 2024)
    minLSTM  gates (f, i, h̃), no recurrent weights (Feng et al. 2024)
    LRU      complex diagonal λ = exp(−exp(ν) + i exp(θ)) (Orvieto et al. 2023)

Params are read by field name (`w_x`, `w_h`, `b`, `w_peep`, `b_hn`; the LRU's
`nu_log`, `theta_log`, `gamma_log`, `b_re`, `b_im`, `c_re`, `c_im`, `d`); a carry
is `h` (Elman, GRU, minGRU, minLSTM), the tuple `(h, c)` (LSTM) or `(re, im)`
(LRU, computed here in complex128). Every function acts on the last
axis, so one example `[features]` or a batch `[*batch, features]` both work.
"""

from collections.abc import Callable

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": sigmoid,
    "identity": lambda x: x,
}


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def lstm_gates(*, forget_gate: bool = True, coupled: bool = False) -> tuple[str, ...]:
    """The documented gate order of the fused LSTM weights."""
    return ("i", "f", "g", "o") if forget_gate and not coupled else ("i", "g", "o")


def gru_gates(*, reset_gate: bool = True) -> tuple[str, ...]:
    """The documented gate order of the fused GRU weights."""
    return ("r", "z", "n") if reset_gate else ("z", "n")


def _per_gate(fused, gates: tuple[str, ...]) -> dict[str, np.ndarray]:
    """`[..., k*H]` -> {gate: [..., H]} by explicit column slices, in gate order."""
    fused = _f64(fused)
    hidden = fused.shape[-1] // len(gates)
    assert hidden * len(gates) == fused.shape[-1], (fused.shape, gates)
    return {g: fused[..., j * hidden : (j + 1) * hidden] for j, g in enumerate(gates)}


def elman_step(params, h_tm1, x_t, *, activation: str = "tanh"):
    """h_t = f(x_t W + h_{t-1} U + b); returns `(h_t, h_t)`."""
    f = ACTIVATIONS[activation]
    w_x, w_h, b = _f64(params.w_x), _f64(params.w_h), _f64(params.b)
    h_t = f(_f64(x_t) @ w_x + _f64(h_tm1) @ w_h + b)
    return h_t, h_t


def lstm_step(
    params,
    carry,
    x_t,
    *,
    peephole: bool = False,
    forget_gate: bool = True,
    coupled: bool = False,
    gate_activation: str = "sigmoid",
    activation: str = "tanh",
):
    """One LSTM step, gate by gate; `carry = (h, c)`; returns `((h_t, c_t), h_t)`.

    Peepholes `p = w_peep[0|1|2]` for (i, f, o): i and f see C_{t-1}, o sees C_t.
    """
    sigma, phi = ACTIVATIONS[gate_activation], ACTIVATIONS[activation]
    gates = lstm_gates(forget_gate=forget_gate, coupled=coupled)
    w, u, b = _per_gate(params.w_x, gates), _per_gate(params.w_h, gates), _per_gate(params.b, gates)
    h_tm1, c_tm1 = _f64(carry[0]), _f64(carry[1])
    x_t = _f64(x_t)

    def pre(gate: str) -> np.ndarray:
        return x_t @ w[gate] + h_tm1 @ u[gate] + b[gate]

    p_i = p_f = p_o = 0.0
    if peephole:
        p_i, p_f, p_o = (_f64(params.w_peep)[j] for j in range(3))
    i_t = sigma(pre("i") + p_i * c_tm1)
    if coupled:
        f_t = 1.0 - i_t
    elif not forget_gate:
        f_t = np.ones_like(i_t)
    else:
        f_t = sigma(pre("f") + p_f * c_tm1)
    g_t = phi(pre("g"))
    c_t = f_t * c_tm1 + i_t * g_t
    o_t = sigma(pre("o") + p_o * c_t)
    h_t = o_t * phi(c_t)
    return (h_t, c_t), h_t


def gru_step(
    params,
    h_tm1,
    x_t,
    *,
    reset_after: bool = True,
    reset_gate: bool = True,
    gate_activation: str = "sigmoid",
    activation: str = "tanh",
):
    """One GRU step, gate by gate; returns `(h_t, h_t)`.

    reset_after=True:  n = φ(x W_n + b_n + r ⊙ (h U_n + b_hn))
    reset_after=False: n = φ(x W_n + b_n + (r ⊙ h) U_n)
    reset_gate=False:  r ≡ 1 (and no b_hn).
    """
    sigma, phi = ACTIVATIONS[gate_activation], ACTIVATIONS[activation]
    gates = gru_gates(reset_gate=reset_gate)
    w, u, b = _per_gate(params.w_x, gates), _per_gate(params.w_h, gates), _per_gate(params.b, gates)
    h_tm1, x_t = _f64(h_tm1), _f64(x_t)
    z_t = sigma(x_t @ w["z"] + h_tm1 @ u["z"] + b["z"])
    if not reset_gate:
        n_t = phi(x_t @ w["n"] + b["n"] + h_tm1 @ u["n"])
    else:
        r_t = sigma(x_t @ w["r"] + h_tm1 @ u["r"] + b["r"])
        if reset_after:
            n_t = phi(x_t @ w["n"] + b["n"] + r_t * (h_tm1 @ u["n"] + _f64(params.b_hn)))
        else:
            n_t = phi(x_t @ w["n"] + b["n"] + (r_t * h_tm1) @ u["n"])
    h_t = (1.0 - z_t) * n_t + z_t * h_tm1
    return h_t, h_t


def mingru_step(params, h_tm1, x_t):
    """z = σ(x W_z + b_z), h̃ = x W_h + b_h, h_t = (1 − z) h_{t-1} + z h̃; returns `(h_t, h_t)`."""
    w, b = _per_gate(params.w_x, ("z", "h")), _per_gate(params.b, ("z", "h"))
    x_t = _f64(x_t)
    z_t = sigmoid(x_t @ w["z"] + b["z"])
    h_t = (1.0 - z_t) * _f64(h_tm1) + z_t * (x_t @ w["h"] + b["h"])
    return h_t, h_t


def minlstm_step(params, h_tm1, x_t):
    """f, i = σ(...), normalised by f + i; h_t = f' h_{t-1} + i' (x W_h + b_h)."""
    gates = ("f", "i", "h")
    w, b = _per_gate(params.w_x, gates), _per_gate(params.b, gates)
    x_t = _f64(x_t)
    f_t = sigmoid(x_t @ w["f"] + b["f"])
    i_t = sigmoid(x_t @ w["i"] + b["i"])
    h_t = f_t / (f_t + i_t) * _f64(h_tm1) + i_t / (f_t + i_t) * (x_t @ w["h"] + b["h"])
    return h_t, h_t


def lru_step(params, carry, x_t):
    """s_t = λ s_{t-1} + γ (x B), y_t = Re(s_t C) + x D in complex128; `carry = (re, im)`."""
    lam = np.exp(-np.exp(_f64(params.nu_log)) + 1j * np.exp(_f64(params.theta_log)))
    gamma = np.exp(_f64(params.gamma_log))
    b = _f64(params.b_re) + 1j * _f64(params.b_im)
    c = _f64(params.c_re) + 1j * _f64(params.c_im)
    x_t = _f64(x_t)
    s_t = lam * (_f64(carry[0]) + 1j * _f64(carry[1])) + gamma * (x_t @ b)
    y_t = (s_t @ c).real + x_t @ _f64(params.d)
    return (s_t.real, s_t.imag), y_t


STEPS: dict[str, Callable] = {
    "elman": elman_step,
    "lstm": lstm_step,
    "gru": gru_step,
    "mingru": mingru_step,
    "minlstm": minlstm_step,
    "lru": lru_step,
}


def _tree_map(fn, carry):
    """Maps over a carry that is an array or a tuple of arrays."""
    if isinstance(carry, tuple):
        return tuple(fn(c) for c in carry)
    return fn(carry)


def unroll(step, params, xs, carry, *, lengths=None, reverse: bool = False):
    """A Python loop over time, one example at a time.

    Sequence b reads steps `0 .. L-1` (or `L-1 .. 0` with `reverse`) where
    `L = lengths[b]` (default T); `ys[t]` is the output after reading step t, and
    steps `t >= L` emit zeros and leave the carry alone.

    Args:
      step: `(params, carry, x_t) -> (carry, y_t)` for one example.
      params: the cell's parameters.
      xs: `[T, *batch, in]`.
      carry: `[*batch, H]` leaves (an array or a tuple of arrays).
      lengths: int `[*batch]` or None.
      reverse: read each sequence backwards within its length.

    Returns:
      `(carry, ys)` in float64, carry leaves `[*batch, H]`, `ys: [T, *batch, H]`.
    """
    xs = _f64(xs)
    num_steps, batch_shape = xs.shape[0], xs.shape[1:-1]
    carry = _tree_map(lambda c: _f64(c).copy(), carry)
    ys = None
    for b in np.ndindex(*batch_shape):
        length = num_steps if lengths is None else int(np.asarray(lengths)[b])
        times = range(length - 1, -1, -1) if reverse else range(length)
        carry_b = _tree_map(lambda c: c[b], carry)
        for t in times:
            carry_b, y = step(params, carry_b, xs[(t, *b)])
            if ys is None:
                ys = np.zeros((num_steps, *batch_shape, y.shape[-1]))
            ys[(t, *b)] = y
        if isinstance(carry, tuple):
            for leaf, leaf_b in zip(carry, carry_b, strict=True):
                leaf[b] = leaf_b
        else:
            carry[b] = carry_b
    if ys is None:  # every length is 0
        hidden = _tree_map(lambda c: c.shape[-1], carry)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        ys = np.zeros((num_steps, *batch_shape, hidden))
    return carry, ys
