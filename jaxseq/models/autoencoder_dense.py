"""Dense autoencoders (linear ≡ PCA, sigmoid) and the corruptions that make them denoising.

    z = σ(x W + b)                 encoder (weights right-multiply, as everywhere in jaxseq)
    x̂ = z D + c                    linear decoder
    L = Σ_n ‖x̂_n − x_n‖²           reconstruction error

With a linear encoder every minimum of L projects onto the top-k principal
subspace (Baldi & Hornik 1989). A denoising autoencoder reconstructs the clean
x from a corrupted x̃ (`mask_noise`, `gaussian_noise`; Vincent et al. 2008).
"""

from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxseq import _checks
from jaxseq.models import _dense
from jaxseq.types import PRNGKey

Corruption = Callable[[PRNGKey, jax.Array], jax.Array]  # (key, x) -> corrupted x
CORRUPTIONS = ("none", "mask", "gaussian")


class Autoencoder(NamedTuple):
    """A dense autoencoder as pure functions; see `autoencoder`.

    Attributes:
      init: `(key, input_size) -> params`.
      encode: `(params, x) -> z`, `[*batch, D] -> [*batch, k]`.
      decode: `(params, z) -> x̂`, `[*batch, k] -> [*batch, D]`.
      apply: `(params, x, *, key=None) -> x̂`; with a key (training) the input is
        corrupted first, when the autoencoder has a corruption.
    """

    init: Callable[[PRNGKey, int], dict]
    encode: Callable[..., jax.Array]
    decode: Callable[..., jax.Array]
    apply: Callable[..., jax.Array]


def activation(name: str, value: str | _dense.Activation) -> _dense.Activation:
    """An activation by name ("linear" is "identity") or a callable passed through."""
    return _dense.activation(name, "identity" if value == "linear" else value)


def check_features(name: str, x: object, size: int) -> None:
    """Checks `x: float [*batch, size]` (rank >= 1)."""
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    if len(shape) < 1 or shape[-1] != size:
        raise ValueError(f"{name} must have shape [*batch, {size}], got shape {tuple(shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")


def dense_stack(
    params: Sequence[_dense.DenseParams], x: jax.Array, hidden: Callable, last: Callable
) -> jax.Array:
    """`last(... hidden(x W_1 + b_1) ... W_L + b_L)`: `hidden` after all layers but the last."""
    for index, p in enumerate(params):
        x = _dense.dense_apply(p, x)
        x = last(x) if index == len(params) - 1 else hidden(x)
    return x


def autoencoder(
    hidden_sizes: Sequence[int],
    *,
    encoder_activation: str | _dense.Activation = "sigmoid",
    decoder: str | _dense.Activation = "linear",
    corruption: Corruption | None = None,
) -> Autoencoder:
    """A dense autoencoder with a mirrored decoder.

        z_0 = x̃                        (x, or corruption(key, x) when apply gets a key)
        z_i = f(z_{i-1} W_i + b_i)      i = 1..L, widths hidden_sizes; the code is z = z_L
        u_L = z;  u_{i-1} = f(u_i D_i + c_i) for i = L..2;  x̂ = g(u_1 D_1 + c_1)

    f is `encoder_activation` (also on the decoder's hidden layers), g is
    `decoder` ("linear": x̂ = z D + c, the lecture's decoder; "sigmoid" for data
    in [0, 1]). `hidden_sizes=(k,)` with f = σ is the lecture's autoencoder;
    f = identity with g = linear is the linear autoencoder, ≡ PCA. Weights:
    Glorot uniform, biases zero.

    Args:
      hidden_sizes: encoder widths, the last is the code size k (at least one).
      encoder_activation: f, a key of `jaxseq.cells.ACTIVATIONS`, "linear", or a callable.
      decoder: g, the output activation, likewise.
      corruption: `(key, x) -> x̃` applied by `apply` when it gets a key (see
        `corruption`); None trains a plain autoencoder.

    Returns:
      An `Autoencoder`; params `{"encoder": tuple of DenseParams (L),
      "decoder": tuple of DenseParams (L)}`, decoder[0] producing x̂.

    References:
      P. Baldi, K. Hornik. Neural networks and principal component analysis:
      learning from examples without local minima. Neural Networks 2 (1989).
      P. Vincent et al. Extracting and composing robust features with denoising
      autoencoders. ICML 2008.
    """
    hidden_sizes = tuple(hidden_sizes)
    if not hidden_sizes:
        raise ValueError("hidden_sizes must hold at least one width (the code size), got ()")
    for size in hidden_sizes:
        _checks.check_positive_int("hidden_sizes", size)
    f = activation("encoder_activation", encoder_activation)
    g = activation("decoder", decoder)
    if corruption is not None and not callable(corruption):
        raise TypeError(f"corruption must be a callable (key, x) -> x or None, got {corruption!r}")

    def init(key: PRNGKey, input_size: int) -> dict:
        _checks.check_positive_int("input_size", input_size)
        sizes = (input_size, *hidden_sizes)
        keys = jax.random.split(key, 2 * len(hidden_sizes))
        pairs = list(zip(sizes[:-1], sizes[1:]))
        encoder = tuple(_dense.dense(k, m, n) for k, (m, n) in zip(keys[::2], pairs))
        decoder_ = tuple(_dense.dense(k, n, m) for k, (m, n) in zip(keys[1::2], pairs))
        return {"encoder": encoder, "decoder": decoder_}

    def encode(params: dict, x: Float[Array, "*batch in"]) -> Float[Array, "*batch code"]:
        check_features("x", x, params["encoder"][0].w.shape[0])
        return dense_stack(params["encoder"], x, f, f)

    def decode(params: dict, z: Float[Array, "*batch code"]) -> Float[Array, "*batch in"]:
        check_features("z", z, params["decoder"][-1].w.shape[0])
        return dense_stack(params["decoder"][::-1], z, f, g)

    def apply(
        params: dict, x: Float[Array, "*batch in"], *, key: PRNGKey | None = None
    ) -> Float[Array, "*batch in"]:
        if key is not None and corruption is not None:
            x = corruption(key, x)
        return decode(params, encode(params, x))

    return Autoencoder(init, encode, decode, apply)


def reconstruction_loss(
    model: Autoencoder, params: dict, x: Float[Array, "*batch in"], *, key: PRNGKey | None = None
) -> Float[Array, ""]:
    """Mean squared reconstruction error of the clean `x`: (1/ND) Σ_n ‖x̂_n − x_n‖².

    This is the lecture's Σ‖x̂ − x‖² divided by the constant N·D. With `key`
    the model's corruption is applied to its input (denoising: x̂ = apply(x̃)),
    the target stays the clean `x`.

    Args:
      model: an `Autoencoder`.
      params: its params.
      x: `[*batch, D]`.
      key: PRNG key for the corruption (training), or None.
    """
    return _dense.mean_squared_error(model.apply(params, x, key=key), x)


def _check_level(name: str, value: object, upper: float | None) -> None:
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    ok = ok and np.isfinite(value) and value >= 0 and (upper is None or value <= upper)
    if not ok:
        where = "[0, 1]" if upper is not None else ">= 0 and finite"
        raise ValueError(f"{name} must be a number {where}, got {value!r}")


def mask_noise(key: PRNGKey, x: Float[Array, "*batch f"], fraction: float) -> jax.Array:
    """Masking noise: zeroes round(fraction·F) features of each example, chosen at random.

    In every example (the last axis) a fixed number n = round(fraction · F) of
    the F features, uniformly chosen without replacement and independently
    across examples, is set to 0 (Vincent et al. 2008: "hide some features").

    Args:
      key: PRNG key.
      x: `[*batch, F]`, floating.
      fraction: the share of features to hide, in [0, 1].

    Returns:
      An array like `x`.
    """
    _check_level("fraction", fraction, 1.0)
    if getattr(x, "ndim", 0) < 1 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a floating array [*batch, F], got {getattr(x, 'shape', x)}")
    features = x.shape[-1]
    hidden = int(round(fraction * features))
    if hidden == 0:
        return x
    # The indices of the `hidden` largest of F uniform scores: a uniform random subset
    # (top_k is several times faster than ranking all F on CPU).
    _, index = jax.lax.top_k(jax.random.uniform(key, x.shape), hidden)
    columns = jnp.arange(features, dtype=index.dtype).reshape((1,) * index.ndim + (features,))
    masked = jnp.any(index[..., None] == columns, axis=-2)
    return jnp.where(masked, jnp.zeros_like(x), x)


def gaussian_noise(key: PRNGKey, x: Float[Array, "..."], std: float) -> jax.Array:
    """Additive isotropic Gaussian noise: x̃ = x + std · ε, ε ~ N(0, I).

    Args:
      key: PRNG key.
      x: any shape, floating.
      std: the noise standard deviation, >= 0.
    """
    _check_level("std", std, None)
    if not jnp.issubdtype(getattr(x, "dtype", np.dtype(object)), jnp.floating):
        raise TypeError(f"x must be a floating array, got {getattr(x, 'dtype', type(x))}")
    return x + jnp.asarray(std, x.dtype) * jax.random.normal(key, x.shape, x.dtype)


def _no_corruption(key: PRNGKey, x: jax.Array) -> jax.Array:
    del key
    return x


def corruption(kind: str, level: float) -> Corruption:
    """A corruption process `(key, x) -> x̃` by name.

    Args:
      kind: "mask" (`mask_noise`, level = fraction hidden), "gaussian"
        (`gaussian_noise`, level = std) or "none" (x̃ = x).
      level: the fraction (in [0, 1]) or the std (>= 0).

    Returns:
      A pure function of a key and the input.
    """
    _checks.check_option("kind", kind, CORRUPTIONS)
    if kind == "mask":
        _check_level("level", level, 1.0)
        return partial(mask_noise, fraction=level)
    _check_level("level", level, None)
    if kind == "gaussian":
        return partial(gaussian_noise, std=level)
    return _no_corruption
