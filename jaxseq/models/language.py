"""Many-to-many: a tagger (a readout at every step) and a language model with sampling."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxseq import _checks
from jaxseq.layers import Layer
from jaxseq.models import _dense, _sequence
from jaxseq.types import Carry, PRNGKey


def tagger(
    layer: Layer, output_size: int, *, dropout: float = 0.0, compute_dtype=None
) -> _sequence.Model:
    """A sequence tagger (many-to-many): a dense readout of the RNN output at every step.

        ys, _ = layer(xs)                           # [T, *batch, D·H]
        out[t] = dropout(ys[t]) W + b  if t < length else 0

    `apply(params, xs, lengths=None, *, key=None) -> [T, *batch, output_size]`,
    zero at padded steps; `key` switches dropout on.

    Args:
      layer: a `jaxseq.rnn(...)` layer (bidirectional is fine: a tagger sees
        the whole sequence).
      output_size: O, classes or regression targets per step.
      dropout: dropout rate on the RNN outputs (only when `apply` gets a key).
      compute_dtype: dtype of the readout's matrix product (None: the parameter
        dtype; `jnp.bfloat16`: bfloat16 operands, float32 accumulation and
        logits). The layer's precision is its cell's own `compute_dtype`.

    Returns:
      A `Model`; params `{"rnn": layer params, "readout": DenseParams}`.
    """
    _sequence.check_layer("layer", layer)
    _checks.check_positive_int("output_size", output_size)
    _dense.check_rate("dropout", dropout)
    compute_dtype = _checks.check_compute_dtype(compute_dtype)

    def init(key: PRNGKey, input_size: int) -> dict:
        k_rnn, k_out = jax.random.split(key)
        return {
            "rnn": layer.init(k_rnn, input_size),
            "readout": _dense.dense(k_out, layer.output_size, output_size),
        }

    def apply(
        params: dict,
        xs: Float[Array, "time *batch in"],
        lengths: Int[Array, "*batch"] | None = None,
        *,
        key: PRNGKey | None = None,
    ) -> Float[Array, "time *batch out"]:
        _sequence.check_features("xs", xs, _sequence.layer_input_size(layer, params["rnn"]))
        full = _sequence.lengths_or_full(lengths, xs.shape[0], tuple(xs.shape[1:-1]))
        k_rnn, k_drop = _sequence.split_key(key, 2)
        ys, _ = layer.apply(params["rnn"], xs, lengths=lengths, key=k_rnn)
        out = _dense.dense_apply(
            params["readout"], _dense.dropout(k_drop, dropout, ys), compute_dtype
        )
        return _sequence.zero_pads(out, _sequence.time_mask(full, xs.shape[0]))

    return _sequence.Model(init, apply)


class LanguageModel(NamedTuple):
    """A token-level language model as pure functions; see `language_model`."""

    init: Callable[[PRNGKey], dict]
    apply: Callable[..., tuple[jax.Array, Carry]]
    sample: Callable[..., jax.Array]


def _check_temperature(temperature: Any) -> None:
    if not isinstance(temperature, jax.core.Tracer) and not float(temperature) > 0.0:
        raise ValueError(f"temperature must be > 0 (or use greedy=True), got {temperature}")


def language_model(
    layer: Layer,
    vocab_size: int,
    *,
    embed_size: int | None = None,
    dropout: float = 0.0,
    compute_dtype=None,
) -> LanguageModel:
    """A recurrent language model: p(x_{t+1} | x_{≤t}) = softmax(h_t W + b).

        e_t = embed(x_t)               # a learned table row, or one_hot(x_t)
        h_t = layer(e_{≤t})            # causal: the layer must be unidirectional
        logits_t = dropout(h_t) W + b  # predicts token t+1

    `apply(params, tokens, lengths=None, carry=None, *, key=None) -> (logits, final)`:
      tokens: int `[T, *batch]` in [0, vocab_size); logits: `[T, *batch, V]`,
      zero at padded steps (t ≥ lengths); carry / final: the layer's stacked
      carry (leaves `[L, *batch, H]`), so long texts can be fed in chunks.

    `sample(params, key, prompt, num_steps, *, temperature=1.0, greedy=False)
    -> tokens int32 [num_steps, *batch]`: reads `prompt: int [P, *batch]`
    (P ≥ 1, every prompt of the same length), then generates one token at a time
    inside `lax.scan` (one `cell.step` per layer), feeding each back in:
    token ~ softmax(logits / temperature), or argmax with `greedy=True` (the limit
    temperature → 0). Step t draws with `fold_in(key, t)`, t = 0 .. num_steps − 1.
    Jittable with `num_steps` and `greedy` static.

    Args:
      layer: a unidirectional `jaxseq.rnn(...)` layer.
      vocab_size: V.
      embed_size: width of a learned embedding table `[V, embed_size]` (N(0, 1)
        init); None feeds one-hot vectors (the layer's input size is then V).
      dropout: dropout rate on the RNN outputs (only when `apply` gets a key).
      compute_dtype: dtype of the readout's matrix product (None: the parameter
        dtype; `jnp.bfloat16`: bfloat16 operands, float32 accumulation and
        logits). The layer's precision is its cell's own `compute_dtype`.

    Returns:
      A `LanguageModel(init, apply, sample)`; `init(key) -> params` with params
      `{"embed": [V, E] (only with embed_size), "rnn": ..., "readout": DenseParams}`.
    """
    _sequence.check_layer("layer", layer)
    if layer.num_directions != 1:
        raise ValueError("language_model needs a unidirectional layer (got bidirectional=True)")
    _checks.check_positive_int("vocab_size", vocab_size)
    if embed_size is not None:
        _checks.check_positive_int("embed_size", embed_size)
    _dense.check_rate("dropout", dropout)
    compute_dtype = _checks.check_compute_dtype(compute_dtype)

    def init(key: PRNGKey) -> dict:
        k_embed, k_rnn, k_out = jax.random.split(key, 3)
        params = {
            "rnn": layer.init(k_rnn, embed_size or vocab_size),
            "readout": _dense.dense(k_out, layer.output_size, vocab_size),
        }
        if embed_size is not None:
            params["embed"] = _sequence.init_embedding(k_embed, vocab_size, embed_size)
        return params

    def run(params, tokens, lengths, carry, key):
        xs = _sequence.embed(params.get("embed"), tokens, vocab_size)
        k_rnn, k_drop = _sequence.split_key(key, 2)
        ys, final = layer.apply(params["rnn"], xs, carry, lengths=lengths, key=k_rnn)
        ys = _dense.dropout(k_drop, dropout, ys)
        return _dense.dense_apply(params["readout"], ys, compute_dtype), final

    def apply(
        params: dict,
        tokens: Int[Array, " time *batch"],
        lengths: Int[Array, "*batch"] | None = None,
        carry: Carry | None = None,
        *,
        key: PRNGKey | None = None,
    ) -> tuple[Float[Array, "time *batch vocab"], Carry]:
        _sequence.check_tokens("tokens", tokens, vocab_size)
        logits, final = run(params, tokens, lengths, carry, key)
        if lengths is not None:
            logits = _sequence.zero_pads(logits, _sequence.time_mask(lengths, tokens.shape[0]))
        return logits, final

    def sample(
        params: dict,
        key: PRNGKey,
        prompt: Int[Array, " prompt *batch"],
        num_steps: int,
        *,
        temperature: float = 1.0,
        greedy: bool = False,
    ) -> Int[Array, " steps *batch"]:
        _sequence.check_tokens("prompt", prompt, vocab_size)
        if prompt.shape[0] < 1:
            raise ValueError(f"prompt must hold at least one step, got shape {prompt.shape}")
        _checks.check_positive_int("num_steps", num_steps)
        if not greedy:
            _check_temperature(temperature)

        def pick(t, logits_t):
            if greedy:
                return jnp.argmax(logits_t, axis=-1).astype(jnp.int32)
            k_t = jax.random.fold_in(key, t)
            return jax.random.categorical(k_t, logits_t / temperature, axis=-1).astype(jnp.int32)

        def body(state, t):
            carry, token = state
            x_t = _sequence.embed(params.get("embed"), token, vocab_size)
            carry, y_t = _sequence.step_layer(layer, params["rnn"], carry, x_t)
            token = pick(t, _dense.dense_apply(params["readout"], y_t, compute_dtype))
            return (carry, token), token

        logits, carry = run(params, prompt, None, None, None)
        first = pick(0, logits[-1])
        steps = jnp.arange(1, num_steps, dtype=jnp.int32)
        _, rest = jax.lax.scan(body, (carry, first), steps)
        return jnp.concatenate([first[None], rest], axis=0)

    return LanguageModel(init, apply, sample)
