"""What the sequence models share: the `Model` type, input checks, masks, pooling, embeddings.

Sequences are time-major: features `xs: [T, *batch, F]`, tokens `[T, *batch]`,
lengths `int [*batch]` in [0, T]. A step t of sequence b is valid when
t < lengths[b]; padded steps are excluded from pooling and zeroed in outputs.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jaxseq import _checks, initializers
from jaxseq.layers import Layer
from jaxseq.types import PRNGKey

POOLINGS = ("last", "mean", "max")


class Model(NamedTuple):
    """A model as pure functions (the optax / stax pattern).

    Attributes:
      init: `(key, input_size) -> params`.
      apply: `(params, xs, lengths=None, *, key=None) -> outputs`; `key` only
        switches dropout on (training).
    """

    init: Callable[[PRNGKey, int], Any]
    apply: Callable[..., jax.Array]


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_features(name: str, xs: Any, input_size: int) -> None:
    """Checks `xs: float [T, *batch, input_size]` (rank >= 2)."""
    shape = getattr(xs, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an array, got {type(xs).__name__}")
    if len(shape) < 2:
        raise ValueError(
            f"{name} must have shape [time, *batch, features] (rank >= 2), got shape {tuple(shape)}"
        )
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {xs.dtype}")
    if shape[-1] != input_size:
        raise ValueError(
            f"{name} must have {input_size} features (the model's input_size), "
            f"got {shape[-1]} (shape {tuple(shape)})"
        )


def check_tokens(name: str, tokens: Any, vocab_size: int) -> None:
    """Checks `tokens: int [T, *batch]` (rank >= 1) with values in [0, vocab_size) when concrete."""
    shape = getattr(tokens, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an integer array, got {type(tokens).__name__}")
    if len(shape) < 1:
        raise ValueError(f"{name} must have shape [time, *batch] (rank >= 1), got shape ()")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype, got {tokens.dtype}")
    if _is_concrete(tokens) and tokens.size:
        values = np.asarray(tokens)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"{name} must lie in [0, {vocab_size - 1}] (vocab_size {vocab_size}), "
                f"got values in [{low}, {high}]"
            )


def check_lengths(name: str, lengths: Any, num_steps: int, batch_shape: tuple[int, ...]) -> None:
    """`jaxseq._checks.check_lengths`, with the argument's own name in front of the message."""
    try:
        _checks.check_lengths(lengths, num_steps, batch_shape)
    except (TypeError, ValueError) as error:
        if name == "lengths":
            raise
        raise type(error)(f"{name}: {error}") from None


def lengths_or_full(
    lengths: Any, num_steps: int, batch_shape: tuple[int, ...], name: str = "lengths"
) -> jax.Array:
    """Checks `lengths` (int `[*batch]` in [0, num_steps]) or returns `num_steps` everywhere."""
    if lengths is None:
        return jnp.full(batch_shape, num_steps, jnp.int32)
    check_lengths(name, lengths, num_steps, batch_shape)
    return jnp.asarray(lengths, jnp.int32)


def time_mask(lengths: Int[Array, "*batch"], num_steps: int) -> Bool[Array, " time *batch"]:
    """`mask[t, b] = t < lengths[b]`, the valid steps."""
    t = jnp.arange(num_steps, dtype=jnp.int32).reshape((-1,) + (1,) * lengths.ndim)
    return t < lengths.astype(jnp.int32)[None]


def zero_pads(ys: Float[Array, "time *batch f"], mask: Bool[Array, " time *batch"]) -> jax.Array:
    """`ys` with every padded step set to zero."""
    return jnp.where(mask[..., None], ys, jnp.zeros_like(ys))


def last_valid(
    ys: Float[Array, "time *batch f"], lengths: Int[Array, "*batch"]
) -> Float[Array, "*batch f"]:
    """`ys[lengths[b] - 1, b]` per sequence; `ys[0, b]` (zero if padded) for length 0."""
    index = jnp.maximum(lengths.astype(jnp.int32) - 1, 0)
    return jnp.take_along_axis(ys, index[None, ..., None], axis=0)[0]


def pool(
    ys: Float[Array, "time *batch f"], lengths: Int[Array, "*batch"], pooling: str
) -> Float[Array, "*batch f"]:
    """Lengths-aware pooling over time; padded steps never contribute.

        last:  ys[lengths - 1]
        mean:  Σ_{t < length} ys[t] / length
        max:   max_{t < length} ys[t]

    A sequence of length 0 pools to zeros.

    Args:
      ys: `[T, *batch, F]`.
      lengths: int `[*batch]` in [0, T].
      pooling: "last", "mean" or "max".
    """
    mask = time_mask(lengths, ys.shape[0])[..., None]
    nonempty = (lengths > 0)[..., None]
    zero = jnp.zeros((), ys.dtype)
    if pooling == "last":
        pooled = last_valid(ys, lengths)
    elif pooling == "mean":
        total = jnp.sum(jnp.where(mask, ys, zero), axis=0)
        pooled = total / jnp.maximum(lengths, 1).astype(ys.dtype)[..., None]
    elif pooling == "max":
        pooled = jnp.max(jnp.where(mask, ys, jnp.asarray(-jnp.inf, ys.dtype)), axis=0)
    else:
        _checks.check_option("pooling", pooling, POOLINGS)
    return jnp.where(nonempty, pooled, zero)


def init_embedding(
    key: PRNGKey, vocab_size: int, embed_size: int, dtype=jnp.float32
) -> Float[Array, "vocab embed"]:
    """An embedding table `[vocab_size, embed_size]` with N(0, 1) entries (PyTorch's default)."""
    _checks.check_positive_int("vocab_size", vocab_size)
    _checks.check_positive_int("embed_size", embed_size)
    return initializers.normal(1.0)(key, (vocab_size, embed_size), dtype)


def embed(
    table: Float[Array, "vocab embed"] | None, tokens: Int[Array, "..."], vocab_size: int
) -> Float[Array, "... embed"]:
    """Looks tokens up in `table`, or one-hot encodes them (float32) when `table` is None."""
    if table is None:
        return jax.nn.one_hot(tokens, vocab_size, dtype=jnp.float32)
    return jnp.take(table, tokens.astype(jnp.int32), axis=0)


def check_layer(name: str, layer: Any) -> None:
    """Raises `TypeError` unless `layer` is a `jaxseq.Layer` (from `jaxseq.rnn(...)`)."""
    if not isinstance(layer, Layer):
        raise TypeError(f"{name} must be a jaxseq.Layer (from jaxseq.rnn(cell)), got {layer!r}")


def layer_input_size(layer: Layer, params: Any) -> int:
    """The input width the layer's params were made for."""
    return layer.cell.input_size(params[0][0])


def split_key(key: PRNGKey | None, num: int) -> tuple[PRNGKey | None, ...]:
    """`num` keys from `key`, or `num` Nones when `key` is None (evaluation: no dropout)."""
    if key is None:
        return (None,) * num
    return tuple(jax.random.split(key, num))


def step_layer(layer: Layer, params: Any, carry: Any, x_t: jax.Array) -> tuple[Any, jax.Array]:
    """One time step of a unidirectional stacked layer, for decoding loops (no dropout).

    Equals `layer.apply(params, x_t[None], carry)` with the time axis dropped, but
    calls `cell.step` layer by layer instead of a length-1 scan per layer.

    Args:
      layer: a unidirectional `Layer`.
      params: its params.
      carry: stacked carry, leaves `[L, *batch, H]`.
      x_t: `[*batch, in]`.

    Returns:
      `(carry, y_t)` with the stacked carry and the top layer's output `[*batch, H]`.
    """
    finals = []
    for index in range(layer.num_layers):
        c = jax.tree.map(lambda a, i=index: a[i], carry)
        c, x_t = layer.cell.step(params[index][0], c, x_t)
        finals.append(c)
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *finals), x_t
