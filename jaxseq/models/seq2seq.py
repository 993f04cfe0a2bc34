"""Encoder–decoder seq2seq (Sutskever et al. 2014; Cho et al. 2014) for lengths that differ.

The encoder reads the source; its final carry — the same size whatever the
source length — is the fixed-size embedding of the sequence, and (through the
bridge) the decoder's initial state. Training uses teacher forcing; test time
decodes greedily until the end token.
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


class Seq2Seq(NamedTuple):
    """An encoder–decoder as pure functions; see `seq2seq`."""

    init: Callable[[PRNGKey], dict]
    apply: Callable[..., jax.Array]
    encode: Callable[..., Carry]
    greedy_decode: Callable[..., tuple[jax.Array, jax.Array]]


def _check_token_id(name: str, value: Any, vocab_size: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab_size:
        raise ValueError(f"{name} must be an int in [0, {vocab_size - 1}], got {value!r}")


def _check_settings(encoder_layer, decoder_layer, src_vocab, tgt_vocab, embed_size, ids, bridge):
    _sequence.check_layer("encoder_layer", encoder_layer)
    _sequence.check_layer("decoder_layer", decoder_layer)
    if decoder_layer.num_directions != 1:
        raise ValueError("decoder_layer must be unidirectional (got bidirectional=True)")
    for name, value in (("src_vocab", src_vocab), ("tgt_vocab", tgt_vocab)):
        _checks.check_positive_int(name, value)
    _checks.check_positive_int("embed_size", embed_size)
    for name, value in ids.items():
        _check_token_id(name, value, tgt_vocab)
    _checks.check_option("bridge", bridge, _bridge.BRIDGES)


def seq2seq(
    encoder_layer: Layer,
    decoder_layer: Layer,
    src_vocab: int,
    tgt_vocab: int,
    *,
    embed_size: int,
    bos: int,
    eos: int,
    pad: int = 0,
    bridge: str = "auto",
) -> Seq2Seq:
    """An RNN encoder–decoder for token sequences whose input and output lengths differ.

        c = encoder(embed_src(src))_final       # fixed-size: the carry after the last valid step
        s_0 = bridge(c)
        s_u, h_u = decoder(s_{u-1}, embed_tgt(y_{u-1})),   y_{-1} = bos
        logits_u = h_u W + b                    # predicts y_u

    Bridge: "identity" passes the encoder carry as the decoder's initial carry
    (needs the same carry structure and shapes: same cell kind, hidden size and
    number of layers·directions); "dense" learns, for every decoder carry leaf,
    `tanh(flatten(c) W + b)` (any sizes, e.g. a bidirectional encoder); "auto"
    picks identity when the shapes match, else dense.

    `apply(params, src, src_lengths, tgt_in, *, key=None) -> logits [U, *batch, tgt_vocab]`
      (teacher forcing): src int `[S, *batch]`, src_lengths int `[*batch]` in
      [0, S] (None: all S valid), tgt_in int `[U, *batch]` = bos followed by the
      target shifted right. Train on `cross_entropy(logits, tgt_out, mask)`.
      `key` switches the layers' dropout on.
    `encode(params, src, src_lengths=None, *, key=None) -> carry`: the encoder's
      stacked final carry, leaves `[L·D, *batch, H]` — independent of S;
      `models.flatten_carry` makes it one vector per example.
    `greedy_decode(params, src, src_lengths, max_len) -> (tokens, lengths)`:
      feeds back the argmax token, starting from bos, for `max_len` steps
      (`lax.scan`; max_len static). tokens int32 `[max_len, *batch]`: each
      sequence up to and including its first eos, then `pad`; lengths int32
      `[*batch]` count the tokens up to and including eos (max_len when no eos).

    Args:
      encoder_layer: a `jaxseq.rnn(...)` layer (may be bidirectional).
      decoder_layer: a unidirectional `jaxseq.rnn(...)` layer.
      src_vocab: source vocabulary size.
      tgt_vocab: target vocabulary size (bos, eos and pad included).
      embed_size: width of both embedding tables (N(0, 1) init).
      bos: the start token fed at the first decoder step.
      eos: the end token; greedy decoding stops after it.
      pad: the token written after eos by `greedy_decode`.
      bridge: "auto", "identity" or "dense".

    Returns:
      A `Seq2Seq(init, apply, encode, greedy_decode)`; params `{"src_embed",
      "tgt_embed", "encoder", "decoder", "readout"}` plus `"bridge"` (a tuple of
      DenseParams) when the bridge is dense.
    """
    ids = {"bos": bos, "eos": eos, "pad": pad}
    _check_settings(encoder_layer, decoder_layer, src_vocab, tgt_vocab, embed_size, ids, bridge)
    enc_spec = _bridge.carry_spec(encoder_layer, embed_size)
    dec_spec = _bridge.carry_spec(decoder_layer, embed_size)
    dense_bridge = _bridge.needs_dense(bridge, enc_spec, dec_spec)

    def init(key: PRNGKey) -> dict:
        k_src, k_tgt, k_enc, k_dec, k_out, k_bridge = jax.random.split(key, 6)
        params = {
            "src_embed": _sequence.init_embedding(k_src, src_vocab, embed_size),
            "tgt_embed": _sequence.init_embedding(k_tgt, tgt_vocab, embed_size),
            "encoder": encoder_layer.init(k_enc, embed_size),
            "decoder": decoder_layer.init(k_dec, embed_size),
            "readout": _dense.dense(k_out, decoder_layer.output_size, tgt_vocab),
        }
        if dense_bridge:
            params["bridge"] = _bridge.init_bridge(k_bridge, enc_spec, dec_spec)
        return params

    def encode(params, src, src_lengths=None, *, key=None) -> Carry:
        _sequence.check_tokens("src", src, src_vocab)
        if src_lengths is not None:
            _sequence.check_lengths("src_lengths", src_lengths, src.shape[0], tuple(src.shape[1:]))
        xs = _sequence.embed(params["src_embed"], src, src_vocab)
        _, final = encoder_layer.apply(params["encoder"], xs, lengths=src_lengths, key=key)
        return final

    def initial_state(params, src, src_lengths, key=None) -> Carry:
        carry = encode(params, src, src_lengths, key=key)
        return _bridge.apply_bridge(params["bridge"], carry, dec_spec) if dense_bridge else carry

    def apply(
        params: dict,
        src: Int[Array, " src_time *batch"],
        src_lengths: Int[Array, "*batch"] | None,
        tgt_in: Int[Array, " tgt_time *batch"],
        *,
        key: PRNGKey | None = None,
    ) -> Float[Array, "tgt_time *batch tgt_vocab"]:
        _sequence.check_tokens("tgt_in", tgt_in, tgt_vocab)
        if tuple(tgt_in.shape[1:]) != tuple(src.shape[1:]):
            raise ValueError(
                f"tgt_in must have the batch shape of src {tuple(src.shape[1:])}, "
                f"got {tuple(tgt_in.shape[1:])}"
            )
        k_enc, k_dec = _sequence.split_key(key, 2)
        carry = initial_state(params, src, src_lengths, k_enc)
        ys_in = _sequence.embed(params["tgt_embed"], tgt_in, tgt_vocab)
        ys, _ = decoder_layer.apply(params["decoder"], ys_in, carry, key=k_dec)
        return _dense.dense_apply(params["readout"], ys)

    def greedy_decode(
        params: dict, src: Int[Array, " src_time *batch"], src_lengths, max_len: int
    ) -> tuple[Int[Array, " max_len *batch"], Int[Array, "*batch"]]:
        _checks.check_positive_int("max_len", max_len)
        carry = initial_state(params, src, src_lengths)
        batch_shape = tuple(src.shape[1:])

        def body(state, _):
            carry, previous, done = state
            x_t = _sequence.embed(params["tgt_embed"], previous, tgt_vocab)
            carry, y_t = _sequence.step_layer(decoder_layer, params["decoder"], carry, x_t)
            token = jnp.argmax(_dense.dense_apply(params["readout"], y_t), -1).astype(jnp.int32)
            emitted = jnp.where(done, jnp.full_like(token, pad), token)
            return (carry, token, done | (token == eos)), (emitted, ~done)

        start = (carry, jnp.full(batch_shape, bos, jnp.int32), jnp.zeros(batch_shape, bool))
        _, (tokens, live) = jax.lax.scan(body, start, None, length=max_len)
        return tokens, jnp.sum(live, axis=0, dtype=jnp.int32)

    return Seq2Seq(init, apply, encode, greedy_decode)
