"""Sequence autoencoder: an RNN reads a variable-length sequence into a vector, another rebuilds it.

    z = embed(xs)          the encoder's final carry (after each sequence's last valid step),
                           flattened [*batch, E]; optionally squeezed: tanh(z W_e + b_e)
    s_0 = bridge(z)        the decoder's initial carry
    s_t, h_t = decoder(s_{t-1}, x_{t-1}),  x_{-1} = 0      teacher forcing
    x̂_t = h_t W + b        L = masked mean of (x̂_t − x_t)² over valid steps

The embedding has the same size whatever the length of the sequence, so it
serves as a feature vector (Dai & Le 2015; Srivastava et al. 2015).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxseq import _checks
from jaxseq.layers import Layer
from jaxseq.models import _bridge, _dense, _sequence
from jaxseq.types import Carry, PRNGKey


class SequenceAutoencoder(NamedTuple):
    """A sequence autoencoder as pure functions; see `sequence_autoencoder`.

    Attributes:
      embed_size: E, the width of the embedding.
      init: `(key, input_size) -> params`.
      embed: `(params, xs, lengths=None, *, key=None) -> z [*batch, E]`.
      decode: `(params, z, xs, lengths=None, *, key=None) -> x̂ [T, *batch, F]`
        (teacher forcing with the true frames `xs`).
      apply: `(params, xs, lengths=None, *, key=None) -> x̂ [T, *batch, F]`.
      generate: `(params, z, num_steps) -> x̂ [num_steps, *batch, F]`
        (free running: each prediction is the next input).
    """

    embed_size: int
    init: Callable[[PRNGKey, int], dict]
    embed: Callable[..., jax.Array]
    decode: Callable[..., jax.Array]
    apply: Callable[..., jax.Array]
    generate: Callable[..., jax.Array]


def _unflatten(z: jax.Array, spec: Any) -> Carry:
    """Inverse of `flatten_carry`: `[*batch, E]` -> carry leaves `[L·D, *batch, H]`."""
    leaves, tree = jax.tree.flatten(spec)
    out, start = [], 0
    for s in leaves:
        piece = z[..., start : start + s.size].reshape((*z.shape[:-1], *s.shape))
        out.append(jnp.moveaxis(piece, -2, 0))
        start += s.size
    return jax.tree.unflatten(tree, out)


def _check_settings(encoder_layer, decoder_layer, embed_size, bridge) -> None:
    _sequence.check_layer("encoder_layer", encoder_layer)
    _sequence.check_layer("decoder_layer", decoder_layer)
    if decoder_layer.num_directions != 1:
        raise ValueError("decoder_layer must be unidirectional (got bidirectional=True)")
    _checks.check_option("bridge", bridge, _bridge.BRIDGES)
    if embed_size is not None:
        _checks.check_positive_int("embed_size", embed_size)
        if bridge == "identity":
            raise ValueError("bridge='identity' needs embed_size=None (the carry is the embedding)")


def sequence_reconstruction_error(
    x_hat: Float[Array, "time *batch f"],
    xs: Float[Array, "time *batch f"],
    lengths: Int[Array, "*batch"] | None = None,
) -> Float[Array, ""]:
    """Mean of (x̂ − x)² over the valid steps (t < lengths) and all features; pads never count."""
    if lengths is None:
        return _dense.mean_squared_error(x_hat, xs)
    _sequence.check_lengths("lengths", lengths, xs.shape[0], tuple(xs.shape[1:-1]))
    return _dense.mean_squared_error(x_hat, xs, _sequence.time_mask(lengths, xs.shape[0]))


def sequence_autoencoder(
    encoder_layer: Layer,
    decoder_layer: Layer,
    *,
    embed_size: int | None = None,
    bridge: str = "auto",
) -> SequenceAutoencoder:
    """An RNN autoencoder for variable-length sequences `[T, *batch, F]` with `lengths`.

    The embedding is the encoder's final carry flattened (`models.flatten_carry`:
    for an LSTM (h_n, c_n) of every layer and direction), or with `embed_size`
    a tanh bottleneck of that width. The decoder starts from it through the
    bridge: "identity" (no embed_size, same carry shapes) unflattens it into the
    decoder's carry, "dense" learns `tanh(z W_i + b_i)` per decoder carry leaf,
    "auto" picks identity when possible. The decoder reads the previous true
    frame (teacher forcing, a zero frame first) and a dense readout predicts the
    current one. Padded steps (t >= lengths) never reach the embedding (the
    encoder keeps its carry there), the outputs are zero there, and
    `sequence_reconstruction_error` excludes them.

    Args:
      encoder_layer: a `jaxseq.rnn(...)` layer (may be bidirectional, stacked).
      decoder_layer: a unidirectional `jaxseq.rnn(...)` layer.
      embed_size: width of a tanh bottleneck after the flattened carry, or None.
      bridge: "auto", "identity" or "dense".

    Returns:
      A `SequenceAutoencoder`; params `{"encoder", "decoder", "readout"}` plus
      `"embed"` (DenseParams) with embed_size and `"bridge"` when it is dense.

    References:
      A. M. Dai, Q. V. Le. Semi-supervised sequence learning. NeurIPS 2015.
      N. Srivastava, E. Mansimov, R. Salakhutdinov. Unsupervised learning of
      video representations using LSTMs. ICML 2015.
    """
    _check_settings(encoder_layer, decoder_layer, embed_size, bridge)
    enc_spec = _bridge.carry_spec(encoder_layer, 1)  # carries do not depend on input_size
    dec_spec = _bridge.carry_spec(decoder_layer, 1)
    flat_size = sum(s.size for s in jax.tree.leaves(enc_spec))
    size = flat_size if embed_size is None else embed_size
    dense_bridge = embed_size is not None or _bridge.needs_dense(bridge, enc_spec, dec_spec)
    z_spec = jax.ShapeDtypeStruct((1, size), jnp.float32)

    def init(key: PRNGKey, input_size: int) -> dict:
        _checks.check_positive_int("input_size", input_size)
        k_enc, k_dec, k_out, k_embed, k_bridge = jax.random.split(key, 5)
        params = {
            "encoder": encoder_layer.init(k_enc, input_size),
            "decoder": decoder_layer.init(k_dec, input_size),
            "readout": _dense.dense(k_out, decoder_layer.output_size, input_size),
        }
        if embed_size is not None:
            params["embed"] = _dense.dense(k_embed, flat_size, embed_size)
        if dense_bridge:
            params["bridge"] = _bridge.init_bridge(k_bridge, z_spec, dec_spec)
        return params

    def embed(params, xs, lengths=None, *, key=None) -> Float[Array, "*batch embed"]:
        _sequence.check_features(
            "xs", xs, _sequence.layer_input_size(encoder_layer, params["encoder"])
        )
        _sequence.lengths_or_full(lengths, xs.shape[0], tuple(xs.shape[1:-1]))
        _, final = encoder_layer.apply(params["encoder"], xs, lengths=lengths, key=key)
        z = _bridge.flatten_carry(final)
        return z if embed_size is None else jnp.tanh(_dense.dense_apply(params["embed"], z))

    def initial_carry(params: dict, z: jax.Array) -> Carry:
        if dense_bridge:
            return _bridge.apply_bridge(params["bridge"], z[None], dec_spec)
        return _unflatten(z, dec_spec)

    def check_z(z: Any, batch_shape: tuple[int, ...]) -> None:
        if tuple(getattr(z, "shape", ())) != (*batch_shape, size):
            raise ValueError(
                f"z must have shape {(*batch_shape, size)} ([*batch, embed_size]), "
                f"got {getattr(z, 'shape', type(z).__name__)}"
            )

    def decode(params, z, xs, lengths=None, *, key=None) -> Float[Array, "time *batch f"]:
        _sequence.check_features("xs", xs, params["readout"].w.shape[1])
        batch_shape = tuple(xs.shape[1:-1])
        check_z(z, batch_shape)
        mask = _sequence.time_mask(
            _sequence.lengths_or_full(lengths, xs.shape[0], batch_shape), xs.shape[0]
        )
        xs = _sequence.zero_pads(xs, mask)
        inputs = jnp.concatenate([jnp.zeros_like(xs[:1]), xs[:-1]], axis=0)
        carry = initial_carry(params, z)
        ys, _ = decoder_layer.apply(params["decoder"], inputs, carry, lengths=lengths, key=key)
        return _sequence.zero_pads(_dense.dense_apply(params["readout"], ys), mask)

    def apply(params, xs, lengths=None, *, key=None) -> Float[Array, "time *batch f"]:
        k_enc, k_dec = _sequence.split_key(key, 2)
        return decode(params, embed(params, xs, lengths, key=k_enc), xs, lengths, key=k_dec)

    def generate(params: dict, z: Float[Array, "*batch embed"], num_steps: int) -> jax.Array:
        _checks.check_positive_int("num_steps", num_steps)
        check_z(z, tuple(z.shape[:-1]))
        features = params["readout"].w.shape[1]

        def body(state, _):
            carry, x_tm1 = state
            carry, h_t = _sequence.step_layer(decoder_layer, params["decoder"], carry, x_tm1)
            x_t = _dense.dense_apply(params["readout"], h_t)
            return (carry, x_t), x_t

        start = (initial_carry(params, z), jnp.zeros((*z.shape[:-1], features), z.dtype))
        return jax.lax.scan(body, start, None, length=num_steps)[1]

    return SequenceAutoencoder(size, init, embed, decode, apply, generate)
