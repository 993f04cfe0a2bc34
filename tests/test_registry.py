"""Cells by name: every preset builds, and each name means its documented settings."""

import jax
import numpy as np
import pytest

from jaxseq.cells import registry


@pytest.mark.parametrize("name", registry.names())
def test_every_name_builds_a_cell_of_the_requested_width(name, key):
    cell = registry.by_name(name, 3)
    params = cell.init(key, 2)
    carry = cell.initial_carry(params, (4,))
    _, y = cell.step(params, carry, np.ones((4, 2), np.float32))
    assert y.shape == (4, 3)
    assert registry.describe(name)


def test_irnn_is_relu_with_identity_recurrence(key):
    params = registry.by_name("irnn", 5).init(key, 2)
    np.testing.assert_array_equal(params.w_h, np.eye(5, dtype=np.float32))
    assert float(np.std(params.w_x)) < 1e-2
    h, _ = registry.by_name("irnn", 5).step(
        params, -np.ones((1, 5), np.float32), np.zeros((1, 2), np.float32)
    )
    np.testing.assert_array_equal(h, np.zeros((1, 5)))  # relu(-1) = 0


def test_forget_bias_presets(key):
    h = 4
    b1 = registry.by_name("lstm", h).init(key, 2).b
    b0 = registry.by_name("lstm_fb0", h).init(key, 2).b
    np.testing.assert_array_equal(b1[h : 2 * h], np.ones(h))  # gate order i, f, g, o
    np.testing.assert_array_equal(b0[h : 2 * h], np.zeros(h))


def test_no_forget_and_no_reset_drop_a_gate(key):
    assert registry.by_name("lstm_no_forget", 4).init(key, 2).w_h.shape == (4, 12)
    assert registry.by_name("gru_no_reset", 4).init(key, 2).w_h.shape == (4, 8)


def test_overrides_replace_the_preset(key):
    cell = registry.by_name("elman", 3, activation="relu")
    params = cell.init(key, 2)
    xs = np.array([[5.0, 5.0], [-5.0, -5.0]], np.float32)  # opposite signs: tanh goes below 0
    h, _ = cell.step(params, np.zeros((2, 3), np.float32), xs)
    assert float(jax.numpy.min(h)) >= 0.0


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="cell must be one of elman, .*got 'lsmt'"):
        registry.by_name("lsmt", 4)
