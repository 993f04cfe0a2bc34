"""Dense readouts, dropout and the losses every model head shares.

These are the reusable pieces of `jaxseq.models` (classifiers, language models,
seq2seq, baselines and autoencoders all read out through `dense_apply` and train
on `cross_entropy` or `mean_squared_error`). Everything acts on the last axis,
with any leading shape, and broadcasts explicitly (no rank promotion).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jaxseq import _checks, initializers
from jaxseq.cells import ACTIVATIONS, _common
from jaxseq.types import Initializer, PRNGKey

Activation = Callable[[jax.Array], jax.Array]


class DenseParams(NamedTuple):
    """An affine map `x @ w + b` (weights right-multiply, as in the cells)."""

    w: Float[Array, "in out"]
    b: Float[Array, " out"]


def dense(
    key: PRNGKey,
    in_size: int,
    out_size: int,
    *,
    w_init: Initializer = initializers.glorot_uniform(),
    b_init: Initializer = initializers.zeros,
    dtype=jnp.float32,
) -> DenseParams:
    """Initialises a dense layer `[in_size] -> [out_size]`.

    Args:
      key: PRNG key.
      in_size: input width.
      out_size: output width.
      w_init: initialiser of `w: [in_size, out_size]` (default Glorot uniform).
      b_init: initialiser of `b: [out_size]` (default zeros).
      dtype: parameter dtype.

    Returns:
      `DenseParams(w, b)`.
    """
    _checks.check_positive_int("in_size", in_size)
    _checks.check_positive_int("out_size", out_size)
    k_w, k_b = jax.random.split(key)
    return DenseParams(w=w_init(k_w, (in_size, out_size), dtype), b=b_init(k_b, (out_size,), dtype))


def dense_apply(
    params: DenseParams, x: Float[Array, "... in"], compute_dtype=None
) -> Float[Array, "... out"]:
    """`x @ w + b` on the last axis of `x: [..., in]`; returns `[..., out]`.

    Args:
      params: `DenseParams(w, b)`.
      x: `[..., in]`, any floating dtype (cast to the parameter dtype).
      compute_dtype: None (the product in the parameter dtype), or e.g.
        `jnp.bfloat16`: bfloat16 operands, float32 accumulation and result
        (as the cells' `compute_dtype`).
    """
    if x.ndim < 1 or x.shape[-1] != params.w.shape[0]:
        raise ValueError(
            f"dense input must have shape [..., {params.w.shape[0]}], got {tuple(x.shape)}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"dense input must have a floating dtype, got {x.dtype}")
    y = _common.dot(x.astype(params.w.dtype), params.w, compute_dtype)
    return y + params.b.reshape((1,) * (y.ndim - 1) + params.b.shape)


def activation(name: str, value: str | Activation) -> Activation:
    """An activation by name (a key of `jaxseq.cells.ACTIVATIONS`) or a callable passed through."""
    if callable(value):
        return value
    _checks.check_option(name, value, ACTIVATIONS)
    return ACTIVATIONS[value]


def check_rate(name: str, rate: float) -> None:
    """Raises unless `0 <= rate < 1`."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {rate}")


def dropout(key: PRNGKey | None, rate: float, x: jax.Array) -> jax.Array:
    """Inverted dropout: zeroes entries with probability `rate`, scales the rest by 1/(1-rate).

    Identity when `key` is None (evaluation) or `rate == 0`.
    """
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros_like(x))


def _check_labels(logits: jax.Array, labels: jax.Array, mask: jax.Array | None) -> None:
    if logits.ndim < 1:
        raise ValueError(f"logits must have shape [..., classes], got {tuple(logits.shape)}")
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"labels must have shape {tuple(logits.shape[:-1])} (logits without the class "
            f"axis), got {tuple(labels.shape)}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")
    if mask is not None and tuple(mask.shape) != tuple(labels.shape):
        raise ValueError(f"mask must have shape {tuple(labels.shape)}, got {tuple(mask.shape)}")
    if not isinstance(labels, jax.core.Tracer) and labels.size:
        values = np.asarray(labels)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= logits.shape[-1]:
            raise ValueError(
                f"labels must lie in [0, {logits.shape[-1] - 1}] (the number of classes "
                f"minus one), got values in [{low}, {high}]"
            )


def masked_mean(values: Float[Array, "..."], mask: Bool[Array, "..."] | None) -> jax.Array:
    """Mean of `values` over the entries where `mask` is true (0 when none is).

    Args:
      values: any shape.
      mask: bool or 0/1 array of the same shape, or None (plain mean).
    """
    if mask is None:
        return jnp.mean(values)
    weights = mask.astype(values.dtype)
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), jnp.ones((), values.dtype))


def cross_entropy(
    logits: Float[Array, "... classes"],
    labels: Int[Array, "..."],
    mask: Bool[Array, "..."] | None = None,
) -> Float[Array, ""]:
    """Mean negative log-likelihood in nats, −log softmax(logits)[label], over unmasked entries.

    Args:
      logits: `[..., C]` unnormalised log-probabilities.
      labels: int `[...]` in [0, C).
      mask: bool / 0-1 `[...]`; entries where it is false (padding) are excluded.

    Returns:
      A scalar: Σ mask·nll / max(Σ mask, 1).
    """
    _check_labels(logits, labels, mask)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_p, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return masked_mean(nll, mask)


def accuracy(
    logits: Float[Array, "... classes"],
    labels: Int[Array, "..."],
    mask: Bool[Array, "..."] | None = None,
) -> Float[Array, ""]:
    """Fraction of unmasked entries whose argmax equals the label (ties: first index).

    Args:
      logits: `[..., C]`.
      labels: int `[...]` in [0, C).
      mask: bool / 0-1 `[...]` or None.

    Returns:
      A float32 scalar in [0, 1].
    """
    _check_labels(logits, labels, mask)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return masked_mean(correct, mask)


def mean_squared_error(
    preds: Float[Array, "..."], targets: Float[Array, "..."], mask: Bool[Array, "..."] | None = None
) -> Float[Array, ""]:
    """Mean of (preds − targets)² over the entries where `mask` is true.

    Args:
      preds: any shape.
      targets: the same shape.
      mask: None, or bool / 0-1 of the same shape or of a prefix of it (e.g.
        `[T, B]` for `[T, B, F]` predictions: the features of a step count together).
    """
    if tuple(preds.shape) != tuple(targets.shape):
        raise ValueError(
            f"targets must have the shape of preds {tuple(preds.shape)}, got {tuple(targets.shape)}"
        )
    if mask is not None:
        if tuple(preds.shape[: mask.ndim]) != tuple(mask.shape):
            raise ValueError(
                f"mask must have shape {tuple(preds.shape)} or a prefix of it, "
                f"got {tuple(mask.shape)}"
            )
        mask = jnp.broadcast_to(
            mask.reshape(mask.shape + (1,) * (preds.ndim - mask.ndim)), preds.shape
        )
    return masked_mean(jnp.square(preds - targets), mask)
