"""The linear recurrent unit (Orvieto et al. 2023): a complex diagonal linear RNN.

The state is complex, s_t ∈ ℂ^N; the carry keeps it as two real leaves,
`LRUCarry(re, im)`, so every carry leaf stays a real `[*batch, N]` array like
any other cell's (masking, stacking and checks need nothing new). Inside
`unroll(..., method="associative")` the two leaves are joined into one complex
array and scanned in parallel.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxseq import _checks
from jaxseq.cells import _common
from jaxseq.types import Cell, Initializer, LinearRecurrence, PRNGKey


class LRUParams(NamedTuple):
    """LRU parameters (exponential parameterisation of the diagonal λ = e^{−e^ν + i e^θ}).

    Attributes:
      nu_log: `[N]`, ν with |λ| = exp(−exp(ν)) ∈ (0, 1) for any real ν.
      theta_log: `[N]`, θ with arg λ = exp(θ).
      gamma_log: `[N]`, log γ, the input normalisation (γ = √(1 − |λ|²) at init).
      b_re, b_im: `[in, N]`, real and imaginary parts of B (right-multiplied).
      c_re, c_im: `[N, H]`, real and imaginary parts of C.
      d: `[in, H]`, the real feedthrough D.
    """

    nu_log: Float[Array, " state"]
    theta_log: Float[Array, " state"]
    gamma_log: Float[Array, " state"]
    b_re: Float[Array, "in state"]
    b_im: Float[Array, "in state"]
    c_re: Float[Array, "state hidden"]
    c_im: Float[Array, "state hidden"]
    d: Float[Array, "in hidden"]


class LRUCarry(NamedTuple):
    """The complex state s = re + i·im, as two real arrays `[*batch, N]`."""

    re: Float[Array, "*batch state"]
    im: Float[Array, "*batch state"]


def _check_ring(r_min: float, r_max: float, max_phase: float) -> None:
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(
            f"r_min and r_max must satisfy 0 <= r_min < r_max <= 1, got r_min={r_min}, "
            f"r_max={r_max}"
        )
    if not max_phase > 0.0:
        raise ValueError(f"max_phase must be > 0, got {max_phase}")


def ring_init(
    key: PRNGKey,
    state_size: int,
    *,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    dtype=jnp.float32,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """λ uniform on the ring r_min ≤ |λ| ≤ r_max, 0 ≤ arg λ ≤ max_phase (Orvieto et al., Lemma 3.2).

        |λ|² ~ U(r_min², r_max²),  arg λ ~ U(0, max_phase)
        ν = log(−½ log |λ|²),  θ = log(arg λ),  γ = √(1 − |λ|²)

    Args:
      key: PRNG key.
      state_size: N.
      r_min, r_max: radii of the ring, 0 ≤ r_min < r_max ≤ 1.
      max_phase: the largest phase, > 0.
      dtype: parameter dtype.

    Returns:
      `(nu_log, theta_log, gamma_log)`, each `[N]`.
    """
    _check_ring(r_min, r_max, max_phase)
    k_r, k_phase = jax.random.split(key)
    tiny = jnp.finfo(dtype).tiny  # u > 0 keeps every log finite
    u_r = jax.random.uniform(k_r, (state_size,), dtype, minval=tiny)
    u_phase = jax.random.uniform(k_phase, (state_size,), dtype, minval=tiny)
    modulus_sq = u_r * (r_max**2 - r_min**2) + r_min**2
    nu_log = jnp.log(-0.5 * jnp.log(modulus_sq))
    theta_log = jnp.log(max_phase * u_phase)
    gamma_log = 0.5 * jnp.log1p(-modulus_sq)
    return nu_log, theta_log, gamma_log


def diagonal(params: LRUParams) -> tuple[jax.Array, jax.Array]:
    """Real and imaginary parts of λ = exp(−exp(ν) + i exp(θ)), each `[N]`."""
    modulus = jnp.exp(-jnp.exp(params.nu_log))
    phase = jnp.exp(params.theta_log)
    return modulus * jnp.cos(phase), modulus * jnp.sin(phase)


def _normal(scale: float) -> Initializer:
    """N(0, scale / fan_in) with fan_in = shape[0], as in the paper's B, C, D."""
    return jax.nn.initializers.variance_scaling(scale, "fan_in", "normal", in_axis=0, out_axis=1)


def lru(
    hidden_size: int,
    *,
    state_size: int | None = None,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    b_init: Initializer = _normal(0.5),
    c_init: Initializer = _normal(1.0),
    d_init: Initializer = _normal(1.0),
    dtype=jnp.float32,
    compute_dtype=None,
) -> Cell:
    """Linear recurrent unit with a complex diagonal state.

        λ = exp(−exp(ν) + i·exp(θ)),   γ = exp(γ_log)
        s_t = λ ⊙ s_{t-1} + γ ⊙ (x_t B)              s_t ∈ ℂ^N
        y_t = Re(s_t C) + x_t D                       y_t ∈ ℝ^H

    B = B_re + i·B_im `[in, N]`, C = C_re + i·C_im `[N, H]`, D `[in, H]` (the
    paper's D is diagonal because there in = H; here it is a full matrix so
    any input width works). The hoisted projection is
    `[γ⊙(x B_re), γ⊙(x B_im), x D]` `[..., 2N + H]`. Init: λ from `ring_init`,
    γ = √(1 − |λ|²); B_re, B_im ~ N(0, 1/(2·in)), C_re, C_im ~ N(0, 1/N),
    D ~ N(0, 1/in). The carry is `LRUCarry(re, im)`, each `[*batch, N]`. This
    is the recurrent layer alone: the paper's MLP/GLU, normalisation and
    residual around it belong to a model.

    Args:
      hidden_size: output width H.
      state_size: N, the number of complex state units (default H).
      r_min, r_max: radii of the ring |λ| is drawn from (0 ≤ r_min < r_max ≤ 1).
      max_phase: largest initial phase of λ.
      b_init: initialiser of B_re and B_im `[in, N]`.
      c_init: initialiser of C_re and C_im `[N, H]`.
      d_init: initialiser of D `[in, H]`.
      dtype: parameter dtype (real; the state is complex of matching precision).
      compute_dtype: dtype of the dense products x B, x D and s C (None: the
        parameter dtype); with `jnp.bfloat16` they take bfloat16 operands and
        accumulate in float32. λ, γ and the complex diagonal recurrence always
        run in the parameter dtype.

    Returns:
      A `Cell` with params `LRUParams`, carry `LRUCarry` and a `LinearRecurrence`.

    References:
      Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu, De 2023, "Resurrecting
      recurrent neural networks for long sequences".
    """
    _checks.check_positive_int("hidden_size", hidden_size)
    state_size = hidden_size if state_size is None else state_size
    _checks.check_positive_int("state_size", state_size)
    _check_ring(r_min, r_max, max_phase)
    compute_dtype = _checks.check_compute_dtype(compute_dtype)
    n = state_size

    def init(key: PRNGKey, input_size: int) -> LRUParams:
        _checks.check_positive_int("input_size", input_size)
        k_ring, k_bre, k_bim, k_cre, k_cim, k_d = jax.random.split(key, 6)
        nu_log, theta_log, gamma_log = ring_init(
            k_ring, n, r_min=r_min, r_max=r_max, max_phase=max_phase, dtype=dtype
        )
        return LRUParams(
            nu_log=nu_log,
            theta_log=theta_log,
            gamma_log=gamma_log,
            b_re=b_init(k_bre, (input_size, n), dtype),
            b_im=b_init(k_bim, (input_size, n), dtype),
            c_re=c_init(k_cre, (n, hidden_size), dtype),
            c_im=c_init(k_cim, (n, hidden_size), dtype),
            d=d_init(k_d, (input_size, hidden_size), dtype),
        )

    def initial_carry(params: LRUParams, batch_shape: tuple[int, ...]) -> LRUCarry:
        zeros = jnp.zeros((*batch_shape, params.nu_log.shape[0]), params.nu_log.dtype)
        return LRUCarry(re=zeros, im=zeros)

    def dot(a: jax.Array, w: jax.Array) -> jax.Array:
        return _common.dot(a, w, compute_dtype)

    def project(params: LRUParams, x: jax.Array) -> jax.Array:
        x = x.astype(params.b_re.dtype)
        gamma = jnp.exp(params.gamma_log)
        bx_re, bx_im = dot(x, params.b_re), dot(x, params.b_im)
        gamma = _common.broadcast(gamma, bx_re)
        return jnp.concatenate([gamma * bx_re, gamma * bx_im, dot(x, params.d)], axis=-1)

    def output(params: LRUParams, re: jax.Array, im: jax.Array, xp: jax.Array) -> jax.Array:
        return dot(re, params.c_re) - dot(im, params.c_im) + xp[..., 2 * n :]

    def readout(params: LRUParams, s: jax.Array, xp: jax.Array):
        re, im = jnp.real(s), jnp.imag(s)
        return LRUCarry(re, im), output(params, re, im, xp)

    def recur(params: LRUParams, carry: LRUCarry, xp_t: jax.Array):
        bx_re, bx_im, _ = jnp.split(xp_t, [n, 2 * n], axis=-1)
        lam_re, lam_im = (_common.broadcast(v, bx_re) for v in diagonal(params))
        re = lam_re * carry.re - lam_im * carry.im + bx_re
        im = lam_re * carry.im + lam_im * carry.re + bx_im
        return LRUCarry(re, im), output(params, re, im, xp_t)

    def coefficients(params: LRUParams, xps: jax.Array):
        bx_re, bx_im, _ = jnp.split(xps, [n, 2 * n], axis=-1)
        lam = jax.lax.complex(*diagonal(params))
        return jnp.broadcast_to(_common.broadcast(lam, bx_re), bx_re.shape), jax.lax.complex(
            bx_re, bx_im
        )

    linear = LinearRecurrence(
        coefficients=coefficients,
        to_state=lambda params, carry: jax.lax.complex(carry.re, carry.im),
        readout=readout,
    )
    name = (
        f"lru(hidden_size={hidden_size}, state_size={state_size}, r_min={r_min}, "
        f"r_max={r_max}, max_phase={max_phase:.4g})"
    )
    return Cell(
        name=_common.named(name, compute_dtype),
        hidden_size=hidden_size,
        init=init,
        initial_carry=initial_carry,
        project=project,
        recur=recur,
        input_size=lambda params: params.b_re.shape[0],
        linear=linear,
    )
