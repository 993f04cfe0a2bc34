"""Weight initialisers shared by every cell.

An initialiser has the `jax.nn.initializers` signature
`init(key, shape, dtype=jnp.float32) -> array`. Cells apply them per gate block
with `fused`: a fused weight `[in, k*hidden]` is made of k blocks `[in, hidden]`,
each initialised independently (so `orthogonal` is orthogonal per gate, and
`identity` is the identity per gate).

References:
  Le, Jaitly, Hinton 2015, "A Simple Way to Initialize Recurrent Networks of
    Rectified Linear Units" (identity / IRNN).
  Saxe, McClelland, Ganguli 2014 (orthogonal).
  Jozefowicz, Zaremba, Sutskever 2015 (unit forget bias).
  Tallec, Ollivier 2018, "Can recurrent neural networks warp time?" (chrono).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxseq.types import Initializer, PRNGKey

zeros: Initializer = jax.nn.initializers.zeros
ones: Initializer = jax.nn.initializers.ones


def constant(value: float) -> Initializer:
    """Every entry equals `value` (e.g. a unit forget-gate bias: `constant(1.0)`)."""
    return jax.nn.initializers.constant(value)


def normal(stddev: float = 1e-2) -> Initializer:
    """Entries i.i.d. N(0, stddev²)."""
    return jax.nn.initializers.normal(stddev)


def uniform_fan_in() -> Initializer:
    """PyTorch's RNN default: U(−1/√H, 1/√H) with H = shape[-1], the hidden size.

    PyTorch's `nn.RNN/LSTM/GRU.reset_parameters` uses this bound for every weight
    and bias; for the recurrent weight `[H, H]` it is the usual fan-in bound.
    """

    def init(key: PRNGKey, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        bound = 1.0 / np.sqrt(shape[-1])
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def glorot_uniform() -> Initializer:
    """Glorot & Bengio 2010: U(±√(6 / (fan_in + fan_out)))."""
    return jax.nn.initializers.glorot_uniform()


def orthogonal(scale: float = 1.0) -> Initializer:
    """A (semi-)orthogonal matrix times `scale` (Saxe et al. 2014)."""
    return jax.nn.initializers.orthogonal(scale)


def identity(scale: float = 1.0) -> Initializer:
    """`scale` times the identity matrix, for IRNNs (Le et al. 2015). Square shapes only."""

    def init(key: PRNGKey, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        del key
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"identity init needs a square 2-D shape, got {tuple(shape)}")
        return scale * jnp.eye(shape[0], dtype=dtype)

    return init


def _spectral_radius_host(w: np.ndarray) -> np.ndarray:
    return np.max(np.abs(np.linalg.eigvals(w)), axis=-1).astype(w.dtype)


def spectral_radius(w: jax.Array) -> jax.Array:
    """max |eigenvalue| of a square matrix `w: [n, n]` (computed with LAPACK on the host).

    Works under `jit` and `vmap` through `jax.pure_callback`, on every backend;
    it is meant for initialisation and diagnostics, not for a training step.
    """
    out = jax.ShapeDtypeStruct(w.shape[:-2], w.dtype)
    return jax.pure_callback(_spectral_radius_host, out, w, vmap_method="expand_dims")


def scaled_to_spectral_radius(base: Initializer, radius: float) -> Initializer:
    """`base`'s square matrix rescaled so that its spectral radius equals `radius`.

    Used for echo-state style and vanishing/exploding-gradient studies: with
    ρ(U) < 1 a linear RNN forgets geometrically, with ρ(U) > 1 it explodes.
    """

    def init(key: PRNGKey, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"spectral-radius scaling needs a square shape, got {tuple(shape)}")
        w = base(key, shape, dtype)
        return w * (radius / spectral_radius(w))

    return init


def chrono(max_length: int) -> Initializer:
    """Chrono bias (Tallec & Ollivier 2018): b = log(U(1, max_length − 1)).

    For an LSTM forget gate (or a GRU update gate) this spreads the initial
    characteristic forgetting times over [1, max_length].
    """
    if max_length < 3:
        raise ValueError(f"chrono max_length must be >= 3, got {max_length}")

    def init(key: PRNGKey, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        return jnp.log(jax.random.uniform(key, shape, dtype, 1.0, max_length - 1.0))

    return init


def fused(
    key: PRNGKey, inits: Sequence[Initializer], rows: int | None, hidden_size: int, dtype
) -> jax.Array:
    """Concatenates one independently initialised block per gate along the last axis.

    Args:
      key: PRNG key, split once per block.
      inits: one initialiser per gate block, in gate order.
      rows: the fan-in (`[rows, hidden]` blocks), or None for bias vectors (`[hidden]`).
      hidden_size: width of each block.
      dtype: parameter dtype.

    Returns:
      `[rows, len(inits) * hidden]` or `[len(inits) * hidden]`.
    """
    shape = (hidden_size,) if rows is None else (rows, hidden_size)
    keys = jax.random.split(key, len(inits))
    return jnp.concatenate([init(k, shape, dtype) for init, k in zip(inits, keys)], axis=-1)
