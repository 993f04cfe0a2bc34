"""The `Cell` contract and shared type aliases.

A cell is a NamedTuple of pure functions made by a lowercase factory
(`jaxseq.lstm(...)`, `jaxseq.gru(...)`, `jaxseq.elman(...)`); its
hyperparameters live in the factory's closure, never in `params`.

One step of every cell is split in two so that `jaxseq.unroll` can hoist the
time-parallel part out of the scan:

    xp_t = cell.project(params, x_t)              # input-only: x_t @ W + b
    carry, y_t = cell.recur(params, carry, xp_t)  # recurrent part only

`cell.step(params, carry, x_t)` is exactly `recur(params, carry, project(params, x_t))`.
`project` acts on the last axis only, so `project(params, xs)` with
`xs: [T, *batch, in]` computes every step's input projection in one matmul.

Cells whose recurrence is elementwise linear in the state (minGRU, minLSTM,
LRU) also describe it as a `LinearRecurrence`, so that
`unroll(..., method="associative")` can evaluate all steps with a parallel
scan; `recur` stays the definition and the sequential scan uses it unchanged.

Cells whose only dense recurrent work is one matmul `state(carry) @ weight(params)`
(Elman, LSTM, GRU with `reset_after=True`) also describe their step as a
`RecurrentMatmul`, so that `unroll` can differentiate the whole sequence with one
hand-written VJP (`jaxseq.bptt`) instead of step-by-step autodiff.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from jaxseq import _checks

PRNGKey = jax.Array
Params = Any  # a pytree of arrays, usually a per-cell NamedTuple
Carry = Any  # a pytree of arrays with leaves [*batch, hidden]
Initializer = Callable[..., jax.Array]  # (key, shape, dtype) -> array


class LinearRecurrence(NamedTuple):
    """A cell's step written as an elementwise linear recurrence in a state `s`.

        s_{t-1} = to_state(carry_{t-1})
        s_t = a_t ⊙ s_{t-1} + b_t                     (a_t, b_t from xp_t only)
        carry_t, y_t = readout(params, s_t, xp_t)

    which must equal `recur(params, carry_{t-1}, xp_t)`. Since `a_t` and `b_t`
    do not depend on the state, every `s_t` follows from one associative scan
    over the pairs `(a_t, b_t)` (Blelloch 1990; Martin & Cundy 2018).

    Attributes:
      coefficients: `(params, xps) -> (a, b)`: for the hoisted projection of all
        steps (leaves `[T, *batch, ...]`), arrays `[T, *batch, N]`, real or complex
        (the LRU's diagonal is complex).
      to_state: `(params, carry) -> s`, the carry as one array `[*batch, N]` in the
        dtype of `b`.
      readout: `(params, s, xp) -> (carry, y)` for states `s: [..., N]` and the
        matching projections (any leading shape: all steps at once).
    """

    coefficients: Callable[[Params, Any], tuple[jax.Array, jax.Array]]
    to_state: Callable[[Params, Carry], jax.Array]
    readout: Callable[[Params, jax.Array, Any], tuple[Carry, jax.Array]]


class RecurrentMatmul(NamedTuple):
    """A cell's step split around its one recurrent matrix product.

        hp_t = state(carry_{t-1}) @ weight(params)        [*batch, K]
        carry_t, y_t = combine(params, carry_{t-1}, xp_t, hp_t)

    which must equal `recur(params, carry_{t-1}, xp_t)`. Everything in `combine`
    is elementwise in the batch, so the backward pass over a sequence needs one
    `[*batch, K] @ [K, S]` product per step (∂hp_t → ∂state), and the weight's
    gradient becomes one large product over all steps after the loop
    (Σ_t state_{t-1}ᵀ ∂hp_t), as in cuDNN's and oneDNN's RNN kernels.

    Attributes:
      weight: `(params) -> [S, K]`, the recurrent weight.
      state: `(carry) -> [*batch, S]`, the part of the carry it multiplies (any
        leading shape: also applied to all steps' carries at once).
      combine: `(params, carry, xp_t, hp_t) -> (carry, y_t)`.
      compute_dtype: None (the product in the operands' dtype), or the dtype
        (e.g. bfloat16) both operands are cast to, accumulating in the state's
        dtype (mixed precision).
      additive: True when `combine` reads `xp_t` and `hp_t` only through their
        sum (Elman, LSTM): the VJP then keeps one `[T, *batch, K]` array per
        direction instead of two (`combine(params, carry, xp_t + hp_t, 0)`).
      kernel: the name of the fused CPU kernel (`jaxseq.native`) that computes exactly
        this step from params with fields `w_x`, `b`, `w_h` (and `b_hn`), "elman",
        "lstm" or "gru"; None (default) for any other step. A cell may only set it
        when its step is the kernel's (standard activations, no extra terms).
    """

    weight: Callable[[Params], jax.Array]
    state: Callable[[Carry], jax.Array]
    combine: Callable[[Params, Carry, Any, jax.Array], tuple[Carry, jax.Array]]
    compute_dtype: Any = None
    additive: bool = False
    kernel: str | None = None


class Cell(NamedTuple):
    """A recurrent cell as pure functions (the optax / stax pattern).

    Attributes:
      name: the family and settings, for error messages and reprs.
      hidden_size: width of the state and of the output `y_t`.
      init: `(key, input_size) -> params`.
      initial_carry: `(params, batch_shape) -> carry`; zeros by default. Only the
        shapes and dtypes of `params` are read, so abstract params work.
      project: `(params, x) -> xp`, the input-only part of a step, acting on the
        last axis of `x: [..., input_size]` (any leading shape, time included).
      recur: `(params, carry, xp_t) -> (carry, y_t)`, the recurrent part.
      input_size: `(params) -> int`, the input width `params` were made for.
      linear: the step as a `LinearRecurrence`, for `unroll(method="associative")`;
        None (the default) for cells whose state enters non-linearly. A wrapper
        that changes `project` or `recur` must reset it to None.
      recurrent: the step as a `RecurrentMatmul`, for the sequence-level VJP of
        `unroll(bptt="fused")`; None for cells without that form (the scan is then
        differentiated by autodiff). Also reset it to None in such a wrapper.
    """

    name: str
    hidden_size: int
    init: Callable[[PRNGKey, int], Params]
    initial_carry: Callable[[Params, tuple[int, ...]], Carry]
    project: Callable[[Params, jax.Array], Any]
    recur: Callable[[Params, Carry, Any], tuple[Carry, jax.Array]]
    input_size: Callable[[Params], int]
    linear: LinearRecurrence | None = None
    recurrent: RecurrentMatmul | None = None

    def step(self, params: Params, carry: Carry, x_t: jax.Array) -> tuple[Carry, jax.Array]:
        """One time step in `lax.scan` order: `(carry, x_t) -> (carry, y_t)`.

        Args:
          params: the cell's parameters.
          carry: the state, leaves `[*batch, hidden]`.
          x_t: `[*batch, input_size]`.

        Returns:
          `(carry, y_t)` with `y_t: [*batch, hidden]`.
        """
        _checks.check_inputs(self, params, x_t, name="x_t", time_axis=False)
        _checks.check_carry(self, params, carry, x_t.shape[:-1])
        return self.recur(params, carry, self.project(params, x_t))
