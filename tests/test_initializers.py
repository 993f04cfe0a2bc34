"""The shared initialisers: bounds, per-gate blocks, spectral radius, chrono, forget bias."""

import functools

import chex
import jax
import numpy as np
import pytest

import jaxseq
from jaxseq import initializers

H = 5
IN = 3


def _blocks(fused, k: int) -> list[np.ndarray]:
    """Splits `[..., k*H]` into its k gate blocks `[..., H]` (float64 NumPy)."""
    fused = np.asarray(fused, np.float64)
    width = fused.shape[-1] // k
    return [fused[..., j * width : (j + 1) * width] for j in range(k)]


def _radius(w) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(w, np.float64)))))


# --- bounds --------------------------------------------------------------------------------


def test_uniform_fan_in_bound_is_one_over_sqrt_hidden(key):
    w = initializers.uniform_fan_in()(key, (16, 16))
    assert w.dtype == np.float32
    bound = 1.0 / np.sqrt(16)
    assert np.max(np.abs(w)) <= bound
    assert np.max(np.abs(w)) > 0.95 * bound  # the whole range is used


def test_uniform_fan_in_uses_one_gate_block_as_fan_in(key):
    """PyTorch's bound for a fused LSTM is 1/√H, not 1/√(4H)."""
    hidden = 16
    init = initializers.uniform_fan_in()
    cell = jaxseq.lstm(hidden, w_x_init=init, w_h_init=init, b_init=init, forget_bias=0.0)
    params = cell.init(key, hidden)  # input size = H: every block shape is (16, 16) or (16,)
    for leaf in (params.w_x, params.w_h, params.b):
        assert np.max(np.abs(leaf)) <= 1.0 / np.sqrt(hidden)
        assert np.max(np.abs(leaf)) > 1.0 / np.sqrt(4 * hidden)


def test_glorot_uniform_bounds(key):
    w = initializers.glorot_uniform()(key, (16, 16))  # the shape above: compiled once
    bound = np.sqrt(6.0 / 32)
    assert np.max(np.abs(w)) <= bound
    assert np.max(np.abs(w)) > 0.9 * bound


def test_glorot_fan_out_is_one_gate_block(key):
    """Each LSTM W block `[in, H]` gets the Glorot bound of `[in, H]`, not of `[in, 4H]`."""
    w_x = jaxseq.lstm(H).init(key, IN).w_x
    assert np.max(np.abs(w_x)) <= np.sqrt(6.0 / (IN + H))
    assert np.max(np.abs(w_x)) > np.sqrt(6.0 / (IN + 4 * H))


# --- per-gate structure --------------------------------------------------------------------


def test_fused_concatenates_blocks_in_gate_order(key):
    inits = [initializers.zeros, initializers.ones, initializers.constant(2.0)]
    chex.assert_trees_all_equal(
        initializers.fused(key, inits, None, 2, np.float32),
        np.array([0.0, 0.0, 1.0, 1.0, 2.0, 2.0], np.float32),
    )
    chex.assert_shape(initializers.fused(key, inits, IN, 2, np.float32), (IN, 6))


@pytest.mark.parametrize(
    "factory, num_gates",
    [
        (jaxseq.elman, 1),
        (jaxseq.lstm, 4),
        (functools.partial(jaxseq.lstm, coupled=True), 3),
        (jaxseq.gru, 3),
        (functools.partial(jaxseq.gru, reset_gate=False), 2),
    ],
    ids=["elman", "lstm", "lstm_coupled", "gru", "gru_no_reset_gate"],
)
def test_orthogonal_per_gate_block(factory, num_gates, key):
    w_h = factory(H).init(key, IN).w_h
    chex.assert_shape(w_h, (H, num_gates * H))
    blocks = _blocks(w_h, num_gates)
    for q in blocks:
        np.testing.assert_allclose(q.T @ q, np.eye(H), atol=1e-5)
    for q, other in zip(blocks, blocks[1:]):
        assert not np.allclose(q, other)  # each block is drawn independently


def test_orthogonal_scale(key):
    q = np.asarray(initializers.orthogonal(2.0)(key, (H, H)), np.float64)
    np.testing.assert_allclose(q.T @ q, 4.0 * np.eye(H), atol=1e-5)


def test_identity(key):
    chex.assert_trees_all_equal(initializers.identity()(key, (H, H)), np.eye(H, dtype=np.float32))
    chex.assert_trees_all_equal(
        initializers.identity(0.5)(key, (3, 3)), 0.5 * np.eye(3, dtype=np.float32)
    )


def test_identity_per_gate_block(key):
    """IRNN: `elman(..., w_h_init=identity())`; fused cells get one identity per gate."""
    irnn = jaxseq.elman(H, activation="relu", w_h_init=initializers.identity())
    chex.assert_trees_all_equal(irnn.init(key, IN).w_h, np.eye(H, dtype=np.float32))
    w_h = jaxseq.lstm(H, w_h_init=initializers.identity()).init(key, IN).w_h
    chex.assert_trees_all_equal(w_h, np.tile(np.eye(H, dtype=np.float32), (1, 4)))


@pytest.mark.parametrize("shape", [(3, 4), (3,), (2, 2, 2)], ids=str)
def test_identity_rejects_non_square(shape, key):
    with pytest.raises(ValueError, match=r"identity init needs a square 2-D shape, got"):
        initializers.identity()(key, shape)


# --- spectral radius -----------------------------------------------------------------------

N = 5  # the shape of every recurrent block in test_cells: compiled samplers are shared
BASES = {"normal": initializers.normal(1.0), "glorot": initializers.glorot_uniform()}


@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("radius", [0.5, 1.0, 1.5])
def test_scaled_to_spectral_radius(base, radius, key):
    w = initializers.scaled_to_spectral_radius(BASES[base], radius)(key, (N, N))
    assert w.dtype == np.float32
    np.testing.assert_allclose(_radius(w), radius, rtol=1e-4)
    np.testing.assert_allclose(initializers.spectral_radius(w), radius, rtol=1e-4)


def test_scaled_to_spectral_radius_under_jit_and_vmap(key):
    radius = 0.9
    init = initializers.scaled_to_spectral_radius(initializers.normal(1.0), radius)
    keys = jax.random.split(key, 4)

    w = jax.jit(init, static_argnums=1)(key, (N, N))
    np.testing.assert_allclose(_radius(w), radius, rtol=1e-4)

    stacked = jax.vmap(lambda k: init(k, (N, N)))(keys)
    jitted = jax.jit(jax.vmap(lambda k: init(k, (N, N))))(keys)
    chex.assert_shape(stacked, (4, N, N))
    chex.assert_trees_all_close(stacked, jitted, atol=1e-6)
    for j, key_j in enumerate(keys):
        np.testing.assert_allclose(_radius(stacked[j]), radius, rtol=1e-4)
        chex.assert_trees_all_close(stacked[j], init(key_j, (N, N)), atol=1e-6)
    assert not np.allclose(stacked[0], stacked[1])  # a different matrix per key


def test_spectral_radius_as_elman_recurrent_init(key):
    init = initializers.scaled_to_spectral_radius(initializers.normal(1.0), 1.2)
    w_h = jaxseq.elman(H, w_h_init=init).init(key, IN).w_h
    np.testing.assert_allclose(_radius(w_h), 1.2, rtol=1e-4)


def test_scaled_to_spectral_radius_rejects_non_square(key):
    init = initializers.scaled_to_spectral_radius(initializers.normal(1.0), 1.0)
    with pytest.raises(ValueError, match="square shape"):
        init(key, (3, 4))


# --- chrono and the forget bias ------------------------------------------------------------


@pytest.mark.parametrize("max_length", [3, 50])
def test_chrono_range(max_length, key):
    b = np.asarray(initializers.chrono(max_length)(key, (16, 16)))
    assert b.min() >= 0.0
    assert b.max() <= np.log(max_length - 1) + 1e-6
    # exp(b) ~ U(1, max_length - 1): both 5% tails are hit by 256 samples.
    tail = 0.05 * (max_length - 2)
    assert np.exp(b).min() < 1.0 + tail and np.exp(b).max() > max_length - 1.0 - tail


@pytest.mark.parametrize("max_length", [0, 2])
def test_chrono_rejects_short_lengths(max_length):
    with pytest.raises(ValueError, match="chrono max_length must be >= 3"):
        initializers.chrono(max_length)


def test_lstm_default_forget_bias_is_one(key):
    i, f, g, o = _blocks(jaxseq.lstm(H).init(key, IN).b, 4)
    np.testing.assert_array_equal(f, np.ones(H))
    for block in (i, g, o):
        np.testing.assert_array_equal(block, np.zeros(H))


def test_lstm_float_forget_bias_adds_to_forget_block_only(key):
    b = jaxseq.lstm(H, forget_bias=2.0, b_init=initializers.constant(0.5)).init(key, IN).b
    i, f, g, o = _blocks(b, 4)
    np.testing.assert_allclose(f, np.full(H, 2.5))
    for block in (i, g, o):
        np.testing.assert_array_equal(block, np.full(H, 0.5))


def test_lstm_forget_bias_initializer_replaces_forget_block(key):
    max_length = 20
    cell = jaxseq.lstm(
        H, forget_bias=initializers.chrono(max_length), b_init=initializers.constant(10.0)
    )
    i, f, g, o = _blocks(cell.init(key, IN).b, 4)
    assert np.all(f >= 0.0) and np.all(f <= np.log(max_length - 1) + 1e-6)  # not 10 + chrono
    assert np.unique(f).size > 1
    for block in (i, g, o):
        np.testing.assert_array_equal(block, np.full(H, 10.0))


@pytest.mark.parametrize("options", [{"forget_gate": False}, {"coupled": True}], ids=str)
def test_forget_bias_without_forget_block(options, key):
    b = jaxseq.lstm(H, forget_bias=2.0, **options).init(key, IN).b
    np.testing.assert_array_equal(b, np.zeros(3 * H))  # (i, g, o): no block to add to
