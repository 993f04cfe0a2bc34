"""`jaxseq.models`: heads, language model, seq2seq and baselines against NumPy references.

Every reference here is a float64 NumPy loop over single, unpadded examples
(`numpy_reference`'s per-gate cell steps), so masking, pooling, carry stacking,
bridges and decoding loops in the library are checked against code that has
none of them.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference
import optax
import pytest
from cells_list import normal

import jaxseq
from jaxseq import models

T, B, D, H, C, V = 5, 3, 2, 3, 4, 6
LENGTHS = np.array([5, 2, 0], np.int32)  # full, padded, empty
ATOL = RTOL = 2e-5
ROOT = jax.random.key(0)


def _key(i: int) -> jax.Array:
    return jax.random.fold_in(ROOT, i)


def _tokens(i: int, shape: tuple[int, ...], vocab: int) -> np.ndarray:
    """Deterministic tokens in [0, vocab) from the shared normal draw."""
    draw = np.abs(normal(_key(i), shape)) * 1000
    return (draw.astype(np.int64) % vocab).astype(np.int32)


def _params(init, *args, scale: float = 0.5):
    """Params with the structure `init(key, *args)` gives, every entry N(0, scale²).

    Built from the shared normal draw (no per-shape compile of the initialisers),
    and non-zero everywhere, so a reference that ignored a bias would disagree.
    """
    shapes = jax.eval_shape(lambda k: init(k, *args), ROOT)
    leaves, treedef = jax.tree.flatten(shapes)
    return jax.tree.unflatten(
        treedef, [jnp.asarray(normal(_key(100 + i), s.shape, scale)) for i, s in enumerate(leaves)]
    )


def _jit_np(fn, **jit_options):
    """`jax.jit(fn)` whose outputs come back as NumPy arrays (indexing them compiles nothing)."""
    jitted = jax.jit(fn, **jit_options)
    return lambda *args, **kwargs: jax.tree.map(np.asarray, jitted(*args, **kwargs))


def _f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


# --- NumPy references --------------------------------------------------------------------------


def _kind(layer: jaxseq.Layer) -> str:
    return layer.cell.name.split("(")[0]


def _zero_carry(kind: str, hidden: int):
    return (np.zeros(hidden), np.zeros(hidden)) if kind == "lstm" else np.zeros(hidden)


def _np_layer(layer, params, x, carry=None):
    """One example `x: [t, in]` read in full through every layer and direction.

    Returns `(ys [t, D·H], finals)` with `finals[l·D + d]` the cell carry (NumPy).
    """
    kind, step = _kind(layer), numpy_reference.STEPS[_kind(layer)]
    inputs, finals = np.asarray(x, np.float64), []
    for layer_index, per_direction in enumerate(params):
        outputs = []
        for d, p in enumerate(per_direction):
            hidden = p.w_h.shape[0]
            index = layer_index * len(per_direction) + d
            c = _zero_carry(kind, hidden) if carry is None else carry[index]
            ys = np.zeros((len(inputs), hidden))
            for t in range(len(inputs))[::-1] if d else range(len(inputs)):
                c, ys[t] = step(p, c, inputs[t])
            finals.append(c)
            outputs.append(ys)
        inputs = np.concatenate(outputs, axis=-1)
    return inputs, finals


def _np_dense(p, x):
    return np.asarray(x, np.float64) @ _f64(p.w) + _f64(p.b)


def _np_pool(layer, ys, pooling):
    """Pooling of one unpadded example `ys: [t, D·H]` (zeros when t = 0)."""
    if len(ys) == 0:
        return np.zeros(ys.shape[-1])
    if pooling == "mean":
        return ys.mean(0)
    if pooling == "max":
        return ys.max(0)
    h = layer.cell.hidden_size  # last: forward at t-1, backward at 0
    return np.concatenate([ys[-1, :h], ys[0, h:]]) if layer.num_directions == 2 else ys[-1]


def _noisy_pads(xs, lengths, i):
    """`xs` with large values at the padded steps."""
    mask = np.arange(len(xs))[:, None, None] < lengths[None, :, None]
    return np.where(mask, xs, 100.0 * normal(_key(i), xs.shape))


# --- losses ---------------------------------------------------------------------------------


def _np_nll(logits, labels):
    logits = np.asarray(logits, np.float64)
    log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    return log_z - np.take_along_axis(logits, labels[..., None], -1)[..., 0]


@jax.jit
def _losses(logits, labels, mask):
    """(cross_entropy, accuracy) without and with the mask, in one compile."""
    return (
        models.cross_entropy(logits, labels),
        models.accuracy(logits, labels),
        models.cross_entropy(logits, labels, mask),
        models.accuracy(logits, labels, mask),
        models.cross_entropy(logits, labels, jnp.zeros_like(mask)),
    )


def test_cross_entropy_and_accuracy_match_numpy():
    logits = normal(_key(1), (T, B, C), 2.0)
    labels = _tokens(2, (T, B), C)
    mask = np.arange(T)[:, None] < LENGTHS[None]
    ce, acc, masked_ce, masked_acc, no_valid = _losses(logits, labels, mask)
    nll, correct = _np_nll(logits, labels), logits.argmax(-1) == labels
    np.testing.assert_allclose(ce, nll.mean(), rtol=1e-5)
    np.testing.assert_allclose(acc, correct.mean(), rtol=1e-6)
    np.testing.assert_allclose(masked_ce, nll[mask].mean(), rtol=1e-5)
    np.testing.assert_allclose(masked_acc, correct[mask].mean(), rtol=1e-6)
    assert float(no_valid) == 0.0
    assert 0.0 < correct.mean() < 1.0 and correct.mean() != correct[mask].mean()


def test_mean_squared_error_with_step_mask():
    preds, targets = normal(_key(3), (T, B, D)), normal(_key(4), (T, B, D))
    mask = np.arange(T)[:, None] < LENGTHS[None]
    expected = ((preds - targets) ** 2)[mask].mean()
    actual = jax.jit(models.mean_squared_error)(preds, targets, mask)
    np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_dense_glorot_init_and_apply():
    p = jax.jit(models.dense, static_argnums=(1, 2))(_key(5), 40, 60)
    bound = np.sqrt(6 / (40 + 60))
    assert np.abs(p.w).max() <= bound and np.abs(p.w).max() > 0.9 * bound
    assert not np.any(p.b)
    x = normal(_key(6), (2, 3, 40))
    np.testing.assert_allclose(jax.jit(models.dense_apply)(p, x), _np_dense(p, x), atol=1e-5)


# --- classifier and tagger ------------------------------------------------------------------

LAYERS = {
    "lstm": jaxseq.rnn(jaxseq.lstm(H)),
    "gru_bidir": jaxseq.rnn(jaxseq.gru(H), bidirectional=True),
}


@functools.cache
def _classifier(layer_name: str, pooling: str):
    model = models.classifier(LAYERS[layer_name], C, pooling=pooling)
    return model, _params(model.init, D), _jit_np(model.apply)


@pytest.mark.parametrize(
    "layer_name, pooling, with_lengths",
    [
        ("lstm", "last", True),
        ("gru_bidir", "last", True),
        ("lstm", "mean", True),
        ("lstm", "max", True),
        ("lstm", "last", False),  # lengths=None: all T steps are valid
    ],
)
def test_classifier_matches_per_example_reference(layer_name, pooling, with_lengths):
    layer = LAYERS[layer_name]
    model, params, apply = _classifier(layer_name, pooling)
    xs = normal(_key(11), (T, B, D))
    lengths = LENGTHS if with_lengths else np.full(B, T, np.int32)
    logits = apply(params, xs, LENGTHS if with_lengths else None)
    chex.assert_shape(logits, (B, C))
    for b, length in enumerate(lengths):
        ys, _ = _np_layer(layer, params["rnn"], xs[:length, b])
        expected = _np_dense(params["readout"], _np_pool(layer, ys, pooling))
        np.testing.assert_allclose(logits[b], expected, atol=ATOL, rtol=RTOL)
    # Changing the padded steps changes nothing.
    noisy = _noisy_pads(xs, lengths, 12)
    np.testing.assert_array_equal(apply(params, noisy, LENGTHS if with_lengths else None), logits)


def test_classifier_vmaps_over_examples():
    _, params, apply = _classifier("gru_bidir", "last")
    xs = normal(_key(14), (T, B, D))
    vmapped = _jit_np(jax.vmap(_classifier("gru_bidir", "last")[0].apply, in_axes=(None, 1, 0)))
    per_example = vmapped(params, xs, LENGTHS)
    np.testing.assert_allclose(per_example, apply(params, xs, LENGTHS), atol=1e-6)


def test_tagger_matches_reference_and_is_zero_at_pads():
    layer = LAYERS["gru_bidir"]
    model = models.tagger(layer, C)
    params = _params(model.init, D)
    xs = normal(_key(16), (T, B, D))
    out = _jit_np(model.apply)(params, xs, LENGTHS)
    chex.assert_shape(out, (T, B, C))
    for b, length in enumerate(LENGTHS):
        ys, _ = _np_layer(layer, params["rnn"], xs[:length, b])
        expected = _np_dense(params["readout"], ys)
        np.testing.assert_allclose(out[:length, b], expected, atol=ATOL, rtol=RTOL)
        np.testing.assert_array_equal(out[length:, b], 0.0)


# --- language model -------------------------------------------------------------------------

LM_LAYER = jaxseq.rnn(jaxseq.gru(H), num_layers=2)
LM = models.language_model(LM_LAYER, V, embed_size=D)
LM_PARAMS = _params(LM.init)
LM_APPLY_JIT = _jit_np(LM.apply)
SAMPLE = _jit_np(LM.sample, static_argnums=3, static_argnames="greedy")


def _lm(tokens, lengths=None, carry=None):
    """`LM.apply` with lengths and carry always given, so that every call shares one compile."""
    lengths = np.full(tokens.shape[1:], len(tokens), np.int32) if lengths is None else lengths
    carry = np.zeros((2, *tokens.shape[1:], H), np.float32) if carry is None else carry
    return LM_APPLY_JIT(LM_PARAMS, tokens, lengths, carry)


def _np_lm_step(params, carries, token):
    """One token through the stacked GRU (NumPy); returns (carries, logits [V])."""
    x = _f64(params["embed"])[token]
    new = []
    for layer_index, (p,) in enumerate(params["rnn"]):
        c, x = numpy_reference.gru_step(p, carries[layer_index], x)
        new.append(c)
    return new, _np_dense(params["readout"], x)


def _np_greedy(params, prompt, num_steps):
    """Greedy continuation of one prompt `[P]`, token by token."""
    carries = [np.zeros(H)] * len(params["rnn"])
    for token in prompt:
        carries, logits = _np_lm_step(params, carries, int(token))
    out = []
    for _ in range(num_steps):
        margin = np.sort(logits)[-1] - np.sort(logits)[-2]
        assert margin > 1e-4, "near tie: pick other keys for this test"
        out.append(int(np.argmax(logits)))
        carries, logits = _np_lm_step(params, carries, out[-1])
    return out


def test_language_model_logits_match_reference_and_mask_pads():
    tokens = _tokens(21, (T, B), V)
    logits, final = _lm(tokens, LENGTHS)
    chex.assert_shape(logits, (T, B, V))
    chex.assert_shape(final, (2, B, H))
    for b, length in enumerate(LENGTHS):
        carries = [np.zeros(H)] * 2
        for t in range(length):
            carries, expected = _np_lm_step(LM_PARAMS, carries, int(tokens[t, b]))
            np.testing.assert_allclose(logits[t, b], expected, atol=ATOL, rtol=RTOL)
        np.testing.assert_array_equal(logits[length:, b], 0.0)
        np.testing.assert_allclose(final[:, b], np.stack(carries), atol=ATOL, rtol=RTOL)


def test_language_model_is_causal():
    tokens = _tokens(22, (T, B), V)
    logits, _ = _lm(tokens)
    for t in range(T - 1):
        changed = tokens.copy()
        changed[t + 1 :] = (changed[t + 1 :] + 1) % V
        other, _ = _lm(changed)
        np.testing.assert_array_equal(other[: t + 1], logits[: t + 1])
        assert not np.allclose(other[t + 1], logits[t + 1])


def test_language_model_carry_continues_a_text():
    """Two chunks (the second fed the first's final carry) equal the reference on the whole."""
    tokens = _tokens(23, (2 * T, B), V)
    head, carry = _lm(tokens[:T])
    tail, final = _lm(tokens[T:], None, carry)
    logits = np.concatenate([head, tail])
    for b in range(B):
        carries = [np.zeros(H)] * 2
        for t in range(2 * T):
            carries, expected = _np_lm_step(LM_PARAMS, carries, int(tokens[t, b]))
            np.testing.assert_allclose(logits[t, b], expected, atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(final[:, b], np.stack(carries), atol=ATOL, rtol=RTOL)


def test_greedy_sampling_matches_python_loop():
    prompt = _tokens(24, (2, B), V)
    tokens = SAMPLE(LM_PARAMS, _key(25), prompt, 6, greedy=True)
    chex.assert_shape(tokens, (6, B))
    assert tokens.dtype == jnp.int32
    for b in range(B):
        np.testing.assert_array_equal(tokens[:, b], _np_greedy(LM_PARAMS, prompt[:, b], 6))


def test_temperature_to_zero_is_greedy():
    prompt = _tokens(26, (2, B), V)
    greedy = SAMPLE(LM_PARAMS, _key(27), prompt, 6, greedy=True)
    cold = SAMPLE(LM_PARAMS, _key(27), prompt, 6, temperature=1e-6)
    np.testing.assert_array_equal(cold, greedy)
    hot = SAMPLE(LM_PARAMS, _key(27), prompt, 6, temperature=1.0)
    assert not np.array_equal(hot, greedy)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sample_frequencies_match_softmax(temperature):
    """With W = 0 the logits are the bias b at every step: tokens ~ softmax(b / temperature)."""
    bias = np.array([1.0, 0.0, -1.0, 0.5, 2.0, -3.0], np.float32)
    readout = models.DenseParams(w=jnp.zeros((H, V)), b=jnp.asarray(bias))
    params = {**LM_PARAMS, "readout": readout}
    prompt = _tokens(26, (2, B), V)  # the shapes of the test above: no new compile
    draws = [SAMPLE(params, _key(1000 + i), prompt, 6, temperature=temperature) for i in range(250)]
    freq = np.bincount(np.asarray(draws).ravel(), minlength=V) / (250 * 6 * B)
    expected = np.exp(bias / temperature) / np.exp(bias / temperature).sum()
    np.testing.assert_allclose(freq, expected, atol=0.03)  # 4500 draws: std <= 0.0075


# --- seq2seq --------------------------------------------------------------------------------

S, U, BOS, EOS, PAD = 4, 3, 0, 1, 2
SEQ2SEQ = {  # decoder carry = encoder carry (identity), and a bidirectional GRU into an LSTM
    "identity": models.seq2seq(
        jaxseq.rnn(jaxseq.lstm(H)), jaxseq.rnn(jaxseq.lstm(H)), V, V, embed_size=D, bos=BOS, eos=EOS
    ),
    "dense": models.seq2seq(
        jaxseq.rnn(jaxseq.gru(H), bidirectional=True),
        jaxseq.rnn(jaxseq.lstm(H + 1)),
        V + 1,
        V,
        embed_size=D,
        bos=BOS,
        eos=EOS,
        pad=PAD,
    ),
}
SRC_LENGTHS = np.array([4, 1, 0], np.int32)


@functools.cache
def _seq2seq(name: str):
    model = SEQ2SEQ[name]
    return model, _params(model.init), _jit_np(model.apply), jax.jit(model.encode)


@functools.cache
def _greedy(name: str):
    return _jit_np(SEQ2SEQ[name].greedy_decode, static_argnums=3)


def _leaves(carry) -> list[np.ndarray]:
    """NumPy carries `finals[l·D + d]` (h, or (h, c)) as stacked leaves `[L·D, H]`."""
    if isinstance(carry[0], tuple):
        return [np.stack([c[j] for c in carry]) for j in range(len(carry[0]))]
    return [np.stack(carry)]


def _np_decoder_start(name, params, src_b):
    """The decoder's initial carry for one example: encoder (+ bridge), in NumPy."""
    enc_layer = jaxseq.rnn(jaxseq.lstm(H)) if name == "identity" else LAYERS["gru_bidir"]
    _, finals = _np_layer(enc_layer, params["encoder"], _f64(params["src_embed"])[src_b])
    if name == "identity":
        return finals
    z = np.concatenate([leaf.reshape(-1) for leaf in _leaves(finals)])
    h, c = (np.tanh(_np_dense(p, z)).reshape(1, H + 1) for p in params["bridge"])
    return [(h[0], c[0])]


def _np_decoder_layer(name):
    return jaxseq.rnn(jaxseq.lstm(H if name == "identity" else H + 1))


@pytest.mark.parametrize("name", list(SEQ2SEQ))
def test_seq2seq_teacher_forcing_matches_python_loop(name):
    model, params, apply, _ = _seq2seq(name)
    assert ("bridge" in params) == (name == "dense")
    src = _tokens(30, (S, B), V)
    tgt_in = _tokens(31, (U, B), V)
    logits = apply(params, src, SRC_LENGTHS, tgt_in)
    chex.assert_shape(logits, (U, B, V))
    for b, length in enumerate(SRC_LENGTHS):
        start = _np_decoder_start(name, params, src[:length, b])
        x = _f64(params["tgt_embed"])[tgt_in[:, b]]
        ys, _ = _np_layer(_np_decoder_layer(name), params["decoder"], x, carry=start)
        expected = _np_dense(params["readout"], ys)
        np.testing.assert_allclose(logits[:, b], expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", list(SEQ2SEQ))
def test_encoder_embedding_has_a_fixed_size(name):
    model, params, _, _ = _seq2seq(name)
    shapes = [
        jax.eval_shape(model.encode, params, jax.ShapeDtypeStruct((steps, B), jnp.int32))
        for steps in (2, 9)
    ]
    chex.assert_trees_all_equal_shapes(*shapes)
    stacked = 1 if name == "identity" else 2  # 1 layer; 1 or 2 directions
    assert jax.tree.leaves(shapes[0])[0].shape == (stacked, B, H)
    flat = jax.eval_shape(models.flatten_carry, shapes[0])
    assert flat.shape == (B, 2 * H)  # (h, c) of the LSTM, or forward and backward h


def _np_greedy_decode(name, params, src_b, max_len, *, stop: bool = True):
    """Argmax decoding of one example in a Python loop; returns (tokens, logits per step).

    With `stop`, decoding ends after eos; without, eos is never picked.
    """
    carry, token, out, all_logits = _np_decoder_start(name, params, src_b)[0], BOS, [], []
    for _ in range(max_len):
        x = _f64(params["tgt_embed"])[token]
        carry, y = numpy_reference.lstm_step(params["decoder"][0][0], carry, x)
        logits = _np_dense(params["readout"], y)
        all_logits.append(logits.copy())
        if not stop:
            logits[EOS] = -np.inf
        assert np.sort(logits)[-1] - np.sort(logits)[-2] > 1e-4, "near tie"
        out.append(int(np.argmax(logits)))
        if stop and out[-1] == EOS:
            break
    return out, np.array(all_logits)


def _eos_bias_stopping_late(name, params, src) -> float:
    """An extra eos bias β with which some example ends after more than one token.

    Along an example's no-eos trajectory, gap_u = (max non-eos logit − eos logit)
    at step u; eos is first picked at the first u with gap_u < β. β is set midway
    between a gap and the smallest gap before it.
    """
    for b, length in enumerate(SRC_LENGTHS):
        _, logits = _np_greedy_decode(name, params, src[:length, b], 6, stop=False)
        gaps = np.delete(logits, EOS, axis=-1).max(-1) - logits[:, EOS]
        earlier = np.minimum.accumulate(gaps)
        for u in range(1, len(gaps)):
            if gaps[u] < earlier[u - 1] - 1e-2:
                return float(gaps[u] + earlier[u - 1]) / 2
    raise AssertionError("no example can stop late: pick other keys for this test")


@pytest.mark.parametrize("name", list(SEQ2SEQ))
def test_greedy_decode_matches_python_loop_and_stops_at_eos(name):
    model, params, _, _ = _seq2seq(name)
    src = _tokens(34, (S, B), V)
    readout = params["readout"]
    boost = _eos_bias_stopping_late(name, params, src)
    params = {**params, "readout": readout._replace(b=readout.b.at[EOS].add(boost))}
    tokens, lengths = _greedy(name)(params, src, SRC_LENGTHS, 6)
    chex.assert_shape((tokens, lengths), ((6, B), (B,)))
    pad = PAD if name == "dense" else 0
    for b, length in enumerate(SRC_LENGTHS):
        expected, _ = _np_greedy_decode(name, params, src[:length, b], 6)
        assert int(lengths[b]) == len(expected)
        np.testing.assert_array_equal(tokens[: len(expected), b], expected)
        np.testing.assert_array_equal(tokens[len(expected) :, b], pad)
    assert np.any((lengths > 1) & (tokens[lengths - 1, np.arange(B)] == EOS)), (tokens, lengths)


def test_greedy_decode_with_forced_eos():
    model, params, _, _ = _seq2seq("dense")
    src = _tokens(35, (S, B), V + 1)
    forced = {**params, "readout": models.DenseParams(jnp.zeros((H + 1, V)), 5.0 * jnp.eye(V)[EOS])}
    tokens, lengths = _greedy("dense")(forced, src, SRC_LENGTHS, 6)
    np.testing.assert_array_equal(tokens, np.array([[EOS] * B] + [[PAD] * B] * 5))
    np.testing.assert_array_equal(lengths, np.ones(B))
    never = {**params, "readout": models.DenseParams(jnp.zeros((H + 1, V)), 5.0 * jnp.eye(V)[3])}
    tokens, lengths = _greedy("dense")(never, src, SRC_LENGTHS, 6)
    np.testing.assert_array_equal(tokens, np.full((6, B), 3))
    np.testing.assert_array_equal(lengths, np.full(B, 6))


# --- baselines ------------------------------------------------------------------------------

TC, CNN_LENGTHS = 8, np.array([8, 6, 3], np.int32)
MLP = models.mlp((5, 4), C, seq_len=T)
MLP_DROPOUT = models.mlp((5, 4), C, seq_len=T, dropout=0.5)
MLP_PARAMS = _params(MLP.init, D)
CNN_CASES = {  # padding, kernel_size, pooling, hidden
    "same": models.cnn1d((4, 3), 4, C, pooling="max", padding="same"),
    "valid": models.cnn1d((4, 3), 3, C, pooling="mean", hidden=5, padding="valid"),
}


@functools.cache
def _jit(model_apply):
    return _jit_np(model_apply)


def _relu(x):
    return np.maximum(x, 0.0)


def test_mlp_matches_numpy_on_the_flattened_window():
    xs = normal(_key(40), (T, B, D))
    out = _jit(MLP.apply)(MLP_PARAMS, _noisy_pads(xs, LENGTHS, 41), LENGTHS)
    chex.assert_shape(out, (B, C))
    for b, length in enumerate(LENGTHS):
        z = np.where(np.arange(T)[:, None] < length, xs[:, b], 0.0).reshape(T * D)
        for p in MLP_PARAMS["hidden"]:
            z = _relu(_np_dense(p, z))
        expected = _np_dense(MLP_PARAMS["readout"], z)
        np.testing.assert_allclose(out[b], expected, atol=ATOL, rtol=RTOL)


def test_dropout_only_with_a_key():
    xs = normal(_key(45), (T, B, D))
    apply = _jit(MLP_DROPOUT.apply)
    plain = _jit(MLP.apply)(MLP_PARAMS, xs, LENGTHS)
    np.testing.assert_allclose(apply(MLP_PARAMS, xs, LENGTHS), plain, atol=1e-6)
    first, second = (apply(MLP_PARAMS, xs, LENGTHS, key=_key(i)) for i in (1, 2))
    assert not np.allclose(first, plain) and not np.allclose(first, second)


def _np_conv_stack(conv, x, length, padding):
    """Cross-correlation layers with ReLU on one example `x: [T, in]`; returns valid steps."""
    a = np.where(np.arange(len(x))[:, None] < length, np.asarray(x, np.float64), 0.0)
    for p in conv:
        w, k = _f64(p.w), p.w.shape[0]
        if padding == "same":  # (k - 1) // 2 zeros before, k // 2 after
            a = np.pad(a, (((k - 1) // 2, k // 2), (0, 0)))
        else:
            length = max(length - (k - 1), 0)
        y = [sum(a[t + j] @ w[j] for j in range(k)) for t in range(len(a) - k + 1)]
        a = _relu(np.array(y) + _f64(p.b))
        a[length:] = 0.0
    return a[:length]


@pytest.mark.parametrize("padding", list(CNN_CASES))
def test_cnn1d_matches_numpy_convolution(padding):
    model = CNN_CASES[padding]
    params = _params(model.init, D)
    xs = normal(_key(42), (TC, B, D))
    out = _jit(model.apply)(params, _noisy_pads(xs, CNN_LENGTHS, 43), CNN_LENGTHS)
    chex.assert_shape(out, (B, C))
    for b, length in enumerate(CNN_LENGTHS):
        a = _np_conv_stack(params["conv"], xs[:, b], length, padding)
        if len(a) == 0:
            z = np.zeros(3)
        else:
            z = a.max(0) if padding == "same" else a.mean(0)
        for p in params["hidden"]:
            z = _relu(_np_dense(p, z))
        np.testing.assert_allclose(out[b], _np_dense(params["readout"], z), atol=ATOL, rtol=RTOL)
    assert len(_np_conv_stack(params["conv"], xs[:, 2], 3, "valid")) == 0  # the empty case ran


def test_cnn1d_vmaps_over_examples():
    model = CNN_CASES["same"]
    params = _params(model.init, D)
    xs = normal(_key(44), (TC, B, D))
    apply = _jit(model.apply)
    per_example = _jit_np(jax.vmap(model.apply, in_axes=(None, 1, 0)))(params, xs, CNN_LENGTHS)
    np.testing.assert_allclose(per_example, apply(params, xs, CNN_LENGTHS), atol=1e-6)


# --- gradients ------------------------------------------------------------------------------

ELMAN = jaxseq.rnn(jaxseq.elman(H))
GRAD_MODELS = {
    "classifier": models.classifier(jaxseq.rnn(jaxseq.elman(H), bidirectional=True), C),
    "language_model": models.language_model(ELMAN, V, embed_size=D),
    "seq2seq": models.seq2seq(
        ELMAN, jaxseq.rnn(jaxseq.elman(H + 1)), V, V, embed_size=D, bos=BOS, eos=EOS
    ),
    "mlp": MLP,
    "cnn1d": CNN_CASES["valid"],
}


def _grad_loss(name):
    model = GRAD_MODELS[name]
    tokens, labels = _tokens(50, (T, B), V), _tokens(51, (B,), C)
    xs = normal(_key(52), (T, B, D))
    if name == "language_model":
        return lambda p: models.cross_entropy(model.apply(p, tokens)[0][:-1], tokens[1:])
    if name == "seq2seq":
        logits = lambda p: model.apply(p, tokens, LENGTHS, tokens[:3])  # noqa: E731
        return lambda p: models.cross_entropy(logits(p), tokens[1:4])
    if name == "cnn1d":
        xs = normal(_key(52), (TC, B, D))
    return lambda p: models.cross_entropy(model.apply(p, xs), labels)


@pytest.mark.parametrize("name", list(GRAD_MODELS))
def test_gradients_reach_every_parameter(name):
    model = GRAD_MODELS[name]
    params = (
        _params(model.init) if name in ("language_model", "seq2seq") else _params(model.init, D)
    )
    grads = jax.jit(jax.grad(_grad_loss(name)))(params)
    chex.assert_trees_all_equal_shapes_and_dtypes(grads, params)
    chex.assert_tree_all_finite(grads)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.any(np.asarray(g) != 0), f"zero gradient at {jax.tree_util.keystr(path)}"
    assert "bridge" in params or name != "seq2seq"  # the dense bridge gets gradients too


# --- bad input ------------------------------------------------------------------------------


def _classifier_call(xs, lengths=None):
    _, params, _ = _classifier("lstm", "last")
    return lambda: _classifier("lstm", "last")[0].apply(params, xs, lengths)


def _lm_sample(prompt, num_steps=3, **options):
    return lambda: LM.sample(LM_PARAMS, ROOT, prompt, num_steps, **options)


def _seq2seq_call(method, *args):
    model, params, _, _ = _seq2seq("dense")
    return lambda: getattr(model, method)(params, *args)


def _factory(name, **options):
    return lambda: models.seq2seq(
        jaxseq.rnn(jaxseq.lstm(H)), jaxseq.rnn(jaxseq.lstm(H)), V, V, embed_size=D, **options
    )


XS, TOKENS = np.ones((T, B, D), np.float32), np.zeros((T, B), np.int32)
BAD_INPUTS = {
    "xs_rank": (
        _classifier_call(np.ones(T, np.float32)),
        ValueError,
        r"xs must have shape \[time, \*batch, features\] \(rank >= 2\), got shape \(5,\)",
    ),
    "xs_features": (
        _classifier_call(np.ones((T, B, 3), np.float32)),
        ValueError,
        r"xs must have 2 features \(the model's input_size\), got 3 \(shape \(5, 3, 3\)\)",
    ),
    "xs_dtype": (
        _classifier_call(np.ones((T, B, D), np.int32)),
        TypeError,
        r"xs must have a floating dtype, got int32",
    ),
    "lengths_range": (
        _classifier_call(XS, np.array([6, 0, 1], np.int32)),
        ValueError,
        r"lengths must lie in \[0, 5\] \(the number of time steps\), got values in \[0, 6\]",
    ),
    "lengths_shape": (
        _classifier_call(XS, np.array([1, 2], np.int32)),
        ValueError,
        r"lengths must have the batch shape of xs \(3,\), got \(2,\)",
    ),
    "layer_type": (
        lambda: models.classifier(jaxseq.lstm(H), C),
        TypeError,
        r"layer must be a jaxseq.Layer \(from jaxseq.rnn\(cell\)\), got Cell\(",
    ),
    "pooling": (
        lambda: models.classifier(LAYERS["lstm"], C, pooling="sum"),
        ValueError,
        r"pooling must be one of \('last', 'mean', 'max'\), got 'sum'",
    ),
    "dropout_rate": (
        lambda: models.tagger(LAYERS["lstm"], C, dropout=1.0),
        ValueError,
        r"dropout must lie in \[0, 1\), got 1.0",
    ),
    "tokens_range": (
        lambda: LM.apply(LM_PARAMS, np.array([[0, V]], np.int32)),
        ValueError,
        r"tokens must lie in \[0, 5\] \(vocab_size 6\), got values in \[0, 6\]",
    ),
    "tokens_negative": (
        lambda: LM.apply(LM_PARAMS, np.array([[-1, 0]], np.int32)),
        ValueError,
        r"tokens must lie in \[0, 5\] \(vocab_size 6\), got values in \[-1, 0\]",
    ),
    "tokens_dtype": (
        lambda: LM.apply(LM_PARAMS, XS[..., 0]),
        TypeError,
        r"tokens must have an integer dtype, got float32",
    ),
    "prompt_empty": (
        _lm_sample(np.zeros((0, B), np.int32)),
        ValueError,
        r"prompt must hold at least one step, got shape \(0, 3\)",
    ),
    "temperature": (
        _lm_sample(TOKENS, temperature=0.0),
        ValueError,
        r"temperature must be > 0 \(or use greedy=True\), got 0.0",
    ),
    "num_steps": (_lm_sample(TOKENS, 0), ValueError, r"num_steps must be a positive int, got 0"),
    "lm_bidirectional": (
        lambda: models.language_model(LAYERS["gru_bidir"], V),
        ValueError,
        r"language_model needs a unidirectional layer \(got bidirectional=True\)",
    ),
    "src_range": (
        _seq2seq_call("encode", np.full((S, B), V + 1, np.int32)),
        ValueError,
        r"src must lie in \[0, 6\] \(vocab_size 7\), got values in \[7, 7\]",
    ),
    "src_lengths": (
        _seq2seq_call("encode", TOKENS[:S], np.array([5, 0, 0], np.int32)),
        ValueError,
        r"src_lengths: lengths must lie in \[0, 4\] \(the number of time steps\), got values in "
        r"\[0, 5\]",
    ),
    "tgt_batch": (
        _seq2seq_call("apply", TOKENS, None, TOKENS[:, :2]),
        ValueError,
        r"tgt_in must have the batch shape of src \(3,\), got \(2,\)",
    ),
    "max_len": (
        _seq2seq_call("greedy_decode", TOKENS, None, 0),
        ValueError,
        r"max_len must be a positive int, got 0",
    ),
    "bos": (_factory("bos", bos=V, eos=EOS), ValueError, r"bos must be an int in \[0, 5\], got 6"),
    "identity_bridge": (
        lambda: models.seq2seq(
            LAYERS["gru_bidir"], ELMAN, V, V, embed_size=D, bos=BOS, eos=EOS, bridge="identity"
        ),
        ValueError,
        r"bridge='identity' needs equal encoder and decoder carries, got .*; use bridge='dense'",
    ),
    "decoder_bidirectional": (
        lambda: models.seq2seq(ELMAN, LAYERS["gru_bidir"], V, V, embed_size=D, bos=0, eos=1),
        ValueError,
        r"decoder_layer must be unidirectional \(got bidirectional=True\)",
    ),
    "mlp_seq_len": (
        lambda: MLP.apply(MLP_PARAMS, XS[:4]),
        ValueError,
        r"xs must have seq_len=5 time steps, got 4",
    ),
    "cnn_output_size": (
        lambda: models.cnn1d((4,), 3),
        ValueError,
        r"output_size must be a positive int, got None",
    ),
    "cnn_pooling": (
        lambda: models.cnn1d((4,), 3, C, pooling="last"),
        ValueError,
        r"pooling must be one of \('max', 'mean'\), got 'last'",
    ),
    "cnn_valid_too_short": (
        lambda: CNN_CASES["valid"].apply(_params(CNN_CASES["valid"].init, D), XS[:4]),
        ValueError,
        r"xs must have at least 5 time steps for 2 'valid' convolutions of width 3, got 4",
    ),
    "labels_range": (
        lambda: models.cross_entropy(np.zeros((B, C), np.float32), np.array([0, 1, C])),
        ValueError,
        r"labels must lie in \[0, 3\] \(the number of classes minus one\), got values in \[0, 4\]",
    ),
    "labels_shape": (
        lambda: models.accuracy(np.zeros((B, C), np.float32), np.zeros((B, 1), np.int32)),
        ValueError,
        r"labels must have shape \(3,\) \(logits without the class axis\), got \(3, 1\)",
    ),
    "labels_dtype": (
        lambda: models.cross_entropy(np.zeros((B, C), np.float32), np.zeros(B, np.float32)),
        TypeError,
        r"labels must have an integer dtype, got float32",
    ),
    "mask_shape": (
        lambda: models.cross_entropy(
            np.zeros((B, C), np.float32), np.zeros(B, np.int32), np.ones(2, bool)
        ),
        ValueError,
        r"mask must have shape \(3,\), got \(2,\)",
    ),
    "dense_input": (
        lambda: models.dense_apply(MLP_PARAMS["readout"], np.ones((2, 3), np.float32)),
        ValueError,
        r"dense input must have shape \[\.\.\., 4\], got \(2, 3\)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_fast_naming_the_argument(case):
    fn, error, message = BAD_INPUTS[case]
    with pytest.raises(error, match=f"^{message}"):
        fn()


def test_shape_errors_are_raised_while_tracing():
    _, params, apply = _classifier("lstm", "last")
    with pytest.raises(ValueError, match=r"xs must have 2 features"):
        apply(params, np.ones((T, B, 3), np.float32))
    with pytest.raises(TypeError, match=r"tokens must have an integer dtype"):
        LM_APPLY_JIT(LM_PARAMS, XS[..., 0])


# --- a tiny copy task -----------------------------------------------------------------------


@pytest.mark.slow
def test_seq2seq_learns_to_copy():
    """Reversal-free copy of 3 symbols: teacher forcing trains, greedy decoding reproduces."""
    bos, eos, symbols = 0, 1, 4  # tokens 2..5 are symbols
    model = models.seq2seq(
        jaxseq.rnn(jaxseq.gru(32)), jaxseq.rnn(jaxseq.gru(32)), 6, 6, embed_size=8, bos=bos, eos=eos
    )
    optimizer = optax.adam(2e-2)

    def batch(key):
        src = jax.random.randint(key, (3, 64), 2, 2 + symbols, jnp.int32)
        tgt_in = jnp.concatenate([jnp.full((1, 64), bos, jnp.int32), src])
        tgt_out = jnp.concatenate([src, jnp.full((1, 64), eos, jnp.int32)])
        return src, tgt_in, tgt_out

    def loss(params, key):
        src, tgt_in, tgt_out = batch(key)
        return models.cross_entropy(model.apply(params, src, None, tgt_in), tgt_out)

    @jax.jit
    def train(params):
        def step(carry, i):
            params, opt_state = carry
            value, grads = jax.value_and_grad(loss)(params, jax.random.fold_in(ROOT, i))
            with jax.numpy_dtype_promotion("standard"):
                updates, opt_state = optimizer.update(grads, opt_state, params)
                params = optax.apply_updates(params, updates)
            return (params, opt_state), value

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), jnp.arange(150))
        return params, losses

    params, losses = train(model.init(_key(60)))
    assert float(losses[-10:].mean()) < 0.1 * float(losses[:10].mean()), losses
    src, _, tgt_out = batch(_key(61))
    tokens, lengths = jax.jit(model.greedy_decode, static_argnums=3)(params, src, None, 5)
    assert float(jnp.mean(jnp.all(tokens[:4] == tgt_out, axis=0))) > 0.9
    np.testing.assert_array_equal(lengths, 4)
