"""Autoencoders: linear ≡ PCA (sklearn), corruption statistics, sequence AE lengths, pretraining.

References are independent of the code under test: scikit-learn's PCA and
scipy's principal angles, NumPy forward passes, truncated sequences, and
perturbation (causality) checks of teacher forcing.
"""

import dataclasses
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.linalg import subspace_angles
from sklearn.decomposition import PCA

import jaxseq
from experiments import autoencoder as experiment
from jaxseq import cli, models, training
from jaxseq.models import autoencoder as ae_lib

KEY = jax.random.key(0)
LINEAR_AE = ae_lib.autoencoder((2,), encoder_activation="linear")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _fill(shape, offset, scale=0.4):
    """Deterministic, non-random values of a shape."""
    size = int(np.prod(shape))
    return (scale * np.sin(1.7 * np.arange(size, dtype=np.float32) + offset)).reshape(shape)


def _dense(m, n, offset=0.0):
    """Deterministic, non-random DenseParams [m, n] (no init, no compile)."""
    w = 0.5 * np.sin(np.arange(m * n, dtype=np.float32).reshape(m, n) + offset)
    return models.DenseParams(w, (0.1 * np.cos(np.arange(n) + offset)).astype(np.float32))


# ---------------------------------------------------------------- linear autoencoder ≡ PCA


@jax.jit
def _fit_low_rank(key):
    """200 × 8 points near a 2-D affine subspace (rank-2 signal + isotropic noise of std 0.2),
    and a linear autoencoder with k = 2 fitted by 1000 full-batch Adam steps: one compile."""
    k_data, k_init = jax.random.split(key)
    r = jax.random.normal(k_data, (203, 10))
    z, noise, basis, mean = r[:200, :2], r[:200, 2:], r[200:202, 2:], r[202:, 2:]
    x = z * jnp.array([[2.0, 1.0]]) @ basis / jnp.sqrt(8.0) + mean + 0.2 * noise
    optimizer = optax.adam(optax.cosine_decay_schedule(0.05, 1000))

    def body(carry, _):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(ae_lib.reconstruction_loss, 1)(LINEAR_AE, params, x)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 counts with floats
        params = LINEAR_AE.init(k_init, 8)
        (params, _), losses = jax.lax.scan(body, (params, optimizer.init(params)), length=1000)
    return x, params, losses


@pytest.fixture(scope="module")
def linear_fit():
    x, params, losses = jax.device_get(_fit_low_rank(jax.random.fold_in(KEY, 1)))
    return x, params, losses, PCA(2).fit(x)


def test_linear_autoencoder_spans_the_pca_subspace(linear_fit):
    x, params, _, pca = linear_fit
    # x̂ = z D + c: the decoder's columns (rows of the right-multiplying D) span the subspace.
    angles = subspace_angles(params["decoder"][0].w.T, pca.components_.T)
    assert angles.max() < 0.05, angles


def test_linear_autoencoder_reconstructs_like_pca(linear_fit):
    x, params, losses, pca = linear_fit
    pca_mse = np.mean((pca.inverse_transform(pca.transform(x)) - x) ** 2)
    (e,), (d,) = params["encoder"], params["decoder"]
    ae_mse = np.mean(((x @ e.w + e.b) @ d.w + d.b - x) ** 2)  # NumPy, not the model's apply
    assert abs(ae_mse / pca_mse - 1.0) < 0.01, (ae_mse, pca_mse)
    assert losses[0] > 10 * pca_mse  # it learned: the start was far from PCA


def test_deep_autoencoder_matches_a_numpy_forward_pass():
    ae = ae_lib.autoencoder((5, 3), decoder="sigmoid")
    shapes = jax.eval_shape(lambda k: ae.init(k, 7), KEY)
    assert [p.w.shape for p in shapes["encoder"]] == [(7, 5), (5, 3)]
    assert [p.w.shape for p in shapes["decoder"]] == [(5, 7), (3, 5)]
    (e1, e2), (d1, d2) = (_dense(7, 5), _dense(5, 3, 1.0)), (_dense(5, 7, 2.0), _dense(3, 5, 3.0))
    params = {"encoder": (e1, e2), "decoder": (d1, d2)}
    x = np.linspace(0.0, 1.0, 2 * 4 * 7, dtype=np.float32).reshape(2, 4, 7)
    z = _sigmoid(_sigmoid(x @ e1.w + e1.b) @ e2.w + e2.b)
    x_hat = _sigmoid(_sigmoid(z @ d2.w + d2.b) @ d1.w + d1.b)
    codes, out = jax.jit(lambda p, x: (ae.encode(p, x), ae.apply(p, x)))(params, x)
    np.testing.assert_allclose(codes, z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, x_hat, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- corruption


def test_mask_noise_hides_exactly_the_fraction_uniformly():
    x = jnp.arange(1.0, 41.0).reshape(1, 40) * jnp.ones((2000, 1))
    mask = jax.jit(jax.vmap(ae_lib.mask_noise, (0, None, None)), static_argnums=2)
    out, other = np.asarray(mask(jax.random.split(KEY, 2), x, 0.25))
    hidden = out == 0
    assert (hidden.sum(axis=1) == 10).all()  # round(0.25 · 40) per example
    np.testing.assert_array_equal(out[~hidden], np.asarray(x)[~hidden])  # the rest untouched
    assert np.abs(hidden.mean(axis=0) - 0.25).max() < 0.05  # each feature equally likely
    assert len({row.tobytes() for row in hidden}) > 1900  # masks differ between examples
    assert ((other == 0) != hidden).any()  # and between keys
    np.testing.assert_array_equal(ae_lib.mask_noise(KEY, x, 0.0), x)


def test_gaussian_noise_statistics():
    x = jnp.full((200_000,), 2.0)
    noise = np.asarray(ae_lib.gaussian_noise(jax.random.fold_in(KEY, 5), x, 0.3)) - 2.0
    assert abs(noise.mean()) < 4 * 0.3 / np.sqrt(noise.size)
    assert noise.std() == pytest.approx(0.3, rel=0.01)
    np.testing.assert_array_equal(ae_lib.gaussian_noise(KEY, x, 0.0), x)


def test_denoising_apply_corrupts_only_with_a_key():
    ae = ae_lib.autoencoder((3,), corruption=ae_lib.corruption("mask", 0.5))
    params = {"encoder": (_dense(6, 3),), "decoder": (_dense(3, 6, 1.0),)}
    x = np.linspace(0.1, 1.0, 30, dtype=np.float32).reshape(5, 6)
    k = jax.random.fold_in(KEY, 7)

    @jax.jit
    def run(params, x, k):
        noisy = ae_lib.mask_noise(k, x, 0.5)
        loss = ae_lib.reconstruction_loss(ae, params, x, key=k)
        return noisy, ae.apply(params, x), ae.apply(params, x, key=k), loss

    noisy, clean_out, noisy_out, loss = jax.device_get(run(params, x, k))
    (e,), (d,) = params["encoder"], params["decoder"]
    forward = lambda v: _sigmoid(v @ e.w + e.b) @ d.w + d.b  # noqa: E731
    assert (noisy == 0).sum() == 15 and not (x == 0).any()
    np.testing.assert_allclose(clean_out, forward(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(noisy_out, forward(noisy), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, np.mean((forward(noisy) - x) ** 2), rtol=1e-5)
    np.testing.assert_array_equal(ae_lib.corruption("none", 0.0)(k, x), x)


# ---------------------------------------------------------------- sequence autoencoder

T, B, F, H = 6, 3, 4, 5
LENGTHS = jnp.array([6, 2, 4], jnp.int32)


@pytest.fixture(scope="module")
def seq_model():
    """An LSTM → LSTM autoencoder (identity bridge: the (h, c) carry is the embedding)."""
    sae = ae_lib.sequence_autoencoder(jaxseq.rnn(jaxseq.lstm(H)), jaxseq.rnn(jaxseq.lstm(H)))
    shapes = jax.eval_shape(lambda k: sae.init(k, F), KEY)  # deterministic weights: no compile
    leaves, tree = jax.tree.flatten(shapes)
    params = jax.tree.unflatten(tree, [_fill(s.shape, i) for i, s in enumerate(leaves)])
    xs = jnp.asarray(_fill((T, B, F), 0.5, scale=1.0))
    return sae, params, xs, jax.jit(sae.embed), jax.jit(sae.apply)


def test_sequence_embedding_shapes():
    lstm, gru = jaxseq.rnn(jaxseq.lstm(H), num_layers=2), jaxseq.rnn(jaxseq.gru(3))
    xs = jax.ShapeDtypeStruct((T, 2, B, F), jnp.float32)
    for sae, size in (
        (ae_lib.sequence_autoencoder(lstm, gru), 2 * 2 * H),  # (h, c) of 2 layers; dense bridge
        (ae_lib.sequence_autoencoder(lstm, gru, embed_size=7), 7),
    ):
        params = jax.eval_shape(lambda k, sae=sae: sae.init(k, F), KEY)
        assert sae.embed_size == size
        assert jax.eval_shape(sae.embed, params, xs).shape == (2, B, size)
        assert jax.eval_shape(sae.apply, params, xs).shape == (T, 2, B, F)
        assert jax.eval_shape(lambda p: sae.generate(p, jnp.ones((B, size)), 9), params).shape == (
            9,
            B,
            F,
        )


def test_padded_steps_change_nothing(seq_model):
    sae, params, xs, embed, apply = seq_model
    pad = np.arange(T)[:, None, None] >= np.asarray(LENGTHS)[None, :, None]
    junk = jnp.where(pad, 100.0 + xs, xs)
    np.testing.assert_allclose(embed(params, junk, LENGTHS), embed(params, xs, LENGTHS))
    out = np.asarray(apply(params, junk, LENGTHS))
    np.testing.assert_allclose(out, apply(params, xs, LENGTHS), atol=1e-6)
    assert not out[np.broadcast_to(pad, out.shape)].any()
    loss = ae_lib.sequence_reconstruction_error(jnp.asarray(out), junk, LENGTHS)
    mask = ~np.broadcast_to(pad, out.shape)
    np.testing.assert_allclose(loss, np.mean((out - np.asarray(xs))[mask] ** 2), rtol=1e-5)


def test_embedding_equals_that_of_the_truncated_sequence(seq_model):
    sae, params, xs, embed, _ = seq_model
    z = embed(params, xs, LENGTHS)
    np.testing.assert_allclose(z[0], embed(params, xs)[0], rtol=1e-6)  # full length
    alone = jax.jit(sae.embed)(params, xs[:2, 1:2])  # sequence 1 has 2 valid steps
    np.testing.assert_allclose(z[1:2], alone, rtol=1e-5, atol=1e-6)


def test_teacher_forcing_reads_the_previous_true_frame(seq_model):
    sae, params, xs, embed, _ = seq_model
    z = embed(params, xs, None)
    t0 = 2
    decode = jax.jit(sae.decode)
    base, out = decode(params, z, xs), decode(params, z, xs.at[t0].add(1.0))
    np.testing.assert_allclose(out[: t0 + 1], base[: t0 + 1])  # steps <= t0 read frames < t0
    assert not np.allclose(out[t0 + 1], base[t0 + 1])
    # free running feeds its own predictions: teacher forcing with them reproduces them.
    free = jax.jit(sae.generate, static_argnums=2)(params, z, T)
    np.testing.assert_allclose(decode(params, z, free), free, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- greedy layer-wise pretraining


def test_freeze_keeps_the_frozen_encoders_exactly():
    below = (_dense(6, 4),)
    ae = ae_lib.autoencoder((3,))
    start = {"encoder": (_dense(4, 3, 1.0),), "decoder": (_dense(3, 4, 2.0),)}
    optimizer = ae_lib.freeze(training.make_optimizer("adamw", 0.1))  # weight decay too
    state = training.init_state({"frozen": below, "autoencoder": start}, optimizer)
    step = training.make_train_step(ae_lib.layerwise_loss(ae), optimizer)
    x = np.linspace(0.0, 1.0, 48, dtype=np.float32).reshape(8, 6)
    new, _ = jax.device_get(step(state, x, KEY))
    for got, want in zip(jax.tree.leaves(new.params["frozen"]), jax.tree.leaves(below)):
        np.testing.assert_array_equal(got, want)
    for got, was in zip(jax.tree.leaves(new.params["autoencoder"]), jax.tree.leaves(start)):
        assert not np.array_equal(got, was)


def test_mlp_from_encoders_is_a_models_mlp():
    e1, e2 = _dense(6, 5), _dense(5, 3, 1.0)
    params = ae_lib.mlp_from_encoders(KEY, (e1, e2), 4)
    x = np.linspace(0.0, 1.0, 42, dtype=np.float32).reshape(7, 6)
    mlp = models.mlp((5, 3), 4, activation="sigmoid", seq_len=1)
    codes, logits = jax.jit(
        lambda p, x: (ae_lib.encode_stack(p["hidden"], x), mlp.apply(p, x[None]))
    )(params, x)
    r = jax.device_get(params["readout"])
    expected = _sigmoid(_sigmoid(x @ e1.w + e1.b) @ e2.w + e2.b)
    np.testing.assert_allclose(codes, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, expected @ r.w + r.b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"encoders\[1\] must take 5 inputs"):
        ae_lib.mlp_from_encoders(KEY, (e1, e1), 4)


# ---------------------------------------------------------------- the experiment, every kind

TINY = dict(steps=3, log_every=2, batch_size=16, pretrain_steps=2)
HEADLINE = {
    "linear": ["pca_subspace_angle_max", "reconstruction_mse", "pca_reconstruction_mse"],
    "sigmoid": ["reconstruction_mse", "corrupted_reconstruction_mse", "probe_accuracy"],
    "denoising": ["pca_corrupted_reconstruction_mse", "pixel_probe_accuracy", "pca_probe_accuracy"],
    "sequence": ["reconstruction_mse", "free_running_mse", "previous_frame_mse", "probe_accuracy"],
    "pretrain": ["test_accuracy", "random_init_test_accuracy", "accuracy_gain"],
}
SETTINGS = {
    "linear": dict(widths="3", plots=True),
    "sigmoid": dict(widths="3", plots=False),
    "denoising": dict(widths="4,3", corruption="gaussian", noise_level=0.1, plots=False),
    "sequence": dict(widths="3", embed_size=2, cell="elman", plots=True),
    "pretrain": dict(widths="4,3", num_seeds=2, labels_per_class=3, plots=True),
}


@pytest.mark.parametrize(
    "kind",
    [
        "linear",
        # Each end-to-end run costs several XLA compiles (init, train step, evaluation,
        # probes' encoder): 6-30 s of CPU apiece, so the other kinds run with the slow tests.
        pytest.param("denoising", marks=pytest.mark.slow),
        pytest.param("sigmoid", marks=pytest.mark.slow),
        pytest.param("sequence", marks=pytest.mark.slow),
        pytest.param("pretrain", marks=pytest.mark.slow),
    ],
)
def test_experiment_writes_results(tmp_path, kind):
    config = experiment.Config(kind=kind, out_dir=str(tmp_path), **TINY, **SETTINGS[kind])
    results = experiment.main(config)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert all(np.isfinite(saved[name]) for name in HEADLINE[kind])
    assert saved["steps"] == 3 and saved["kind"] == kind
    assert json.loads((tmp_path / "config.json").read_text())["widths"] == SETTINGS[kind]["widths"]
    assert (tmp_path / "metrics.jsonl").read_text().strip()
    plots = {"reconstructions.png", "filters.png", "embeddings.png"} & {
        p.name for p in tmp_path.iterdir()
    }
    if SETTINGS[kind]["plots"]:
        assert "reconstructions.png" in plots
    else:
        assert not plots
    if kind == "pretrain":
        assert len(saved["test_accuracy_per_seed"]) == 2 and saved["labelled_examples"] == 30
        assert (tmp_path / "layer2" / "metrics.jsonl").exists()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ae_lib.autoencoder(()), "hidden_sizes"),
        (lambda: ae_lib.autoencoder((0,)), "hidden_sizes"),
        (lambda: ae_lib.autoencoder((2,), encoder_activation="bogus"), "encoder_activation"),
        (lambda: ae_lib.autoencoder((2,), decoder="bogus"), "decoder"),
        (lambda: ae_lib.mask_noise(KEY, jnp.ones((2, 3)), 1.5), "fraction"),
        (lambda: ae_lib.gaussian_noise(KEY, jnp.ones((2, 3)), -1.0), "std"),
        (lambda: ae_lib.corruption("salt", 0.1), "kind"),
        (lambda: ae_lib.encode_stack((), jnp.ones(2), "bogus"), "activation_fn"),
        (lambda: ae_lib.mlp_from_encoders(KEY, (), 3), "encoders"),
    ],
)
def test_bad_settings_are_rejected(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_bad_arrays_are_rejected(seq_model):
    sae, params, xs, _, _ = seq_model
    ae = ae_lib.autoencoder((2,))
    dense_params = {"encoder": (_dense(3, 2),), "decoder": (_dense(2, 3),)}
    with pytest.raises(ValueError, match=r"x must have shape \[\*batch, 3\]"):
        ae.encode(dense_params, jnp.ones((4, 5)))
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        ae.apply(dense_params, jnp.ones((4, 3), jnp.int32))
    with pytest.raises(ValueError, match="z must have shape"):
        sae.decode(params, jnp.ones((B, 3)), xs)
    with pytest.raises(ValueError, match="lengths must lie in"):
        sae.embed(params, xs, jnp.array([7, 1, 1], jnp.int32))
    with pytest.raises(ValueError, match="xs must have 4 features"):
        sae.apply(params, jnp.ones((T, B, 2)))
    lstm = jaxseq.rnn(jaxseq.lstm(H))
    with pytest.raises(ValueError, match="decoder_layer must be unidirectional"):
        ae_lib.sequence_autoencoder(lstm, jaxseq.rnn(jaxseq.lstm(H), bidirectional=True))
    with pytest.raises(ValueError, match="embed_size=None"):
        ae_lib.sequence_autoencoder(lstm, lstm, embed_size=4, bridge="identity")


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(kind="pca"), "kind"),
        (dict(steps=0), "steps"),
        (dict(widths="64,x"), "widths"),
        (dict(kind="sequence", widths="8,8"), "widths"),
        (dict(noise_level=2.0), "level"),
        (dict(corruption="salt"), "kind"),
        (dict(labels_per_class=-1), "labels_per_class"),
        (dict(pretrain_steps=0), "pretrain_steps"),
        (dict(cell="bogus"), "bogus"),
    ],
)
def test_bad_config_is_rejected(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        experiment.main(experiment.Config(out_dir=str(tmp_path), **change))
    assert not (tmp_path / "config.json").exists()  # rejected before any work


def test_cli_rejects_unknown_flags_and_missing_matplotlib(tmp_path, monkeypatch):
    with pytest.raises(SystemExit):
        cli.parse(experiment.Config, ["--bogus=1"])
    assert cli.parse(experiment.Config, ["--kind=sequence", "--steps=5"]).steps == 5
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    config = dataclasses.replace(experiment.Config(), out_dir=str(tmp_path))
    with pytest.raises(ImportError, match=r"jaxseq\[plot\]"):
        experiment.main(config)
