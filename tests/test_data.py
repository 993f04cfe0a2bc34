"""Synthetic tasks checked against their definitions, computed independently in NumPy."""

import math

import jax
import numpy as np
import pytest

from jaxseq import data


def test_adding_targets_are_the_sum_of_the_marked_values(key):
    xs, targets = map(np.asarray, data.adding(key, 64, 10))
    assert xs.shape == (10, 64, 2) and targets.shape == (64,)
    values, marker = xs[..., 0], xs[..., 1]
    assert set(np.unique(marker)) == {0.0, 1.0}
    np.testing.assert_array_equal(marker[:5].sum(0), 1)  # one marker in each half
    np.testing.assert_array_equal(marker[5:].sum(0), 1)
    expected = np.array([values[marker[:, b] == 1, b].sum() for b in range(64)])
    np.testing.assert_allclose(targets, expected, rtol=1e-6)


def test_adding_mean_prediction_scores_one_sixth(key):
    _, targets = data.adding(key, 20_000, 20)
    mse = float(np.mean((np.asarray(targets) - 1.0) ** 2))
    assert abs(mse - 1 / 6) < 0.005


def test_copy_memory_layout(key):
    delay, batch = 7, 3
    xs, targets = data.copy_memory(key, batch, delay)
    tokens, targets = np.asarray(xs).argmax(-1), np.asarray(targets)
    assert xs.shape == (delay + 20, batch, 10) and targets.shape == (delay + 20, batch)
    np.testing.assert_array_equal(np.asarray(xs).sum(-1), 1.0)  # one-hot
    pattern = tokens[:10]
    assert pattern.min() >= 1 and pattern.max() <= 8
    blank = np.zeros((delay - 1, batch))
    np.testing.assert_array_equal(tokens[10 : 9 + delay], blank)
    np.testing.assert_array_equal(tokens[9 + delay], 9)  # the delimiter
    np.testing.assert_array_equal(tokens[10 + delay :], 0)
    np.testing.assert_array_equal(targets[: delay + 10], 0)
    np.testing.assert_array_equal(targets[delay + 10 :], pattern)


def test_copy_memory_baseline_is_the_memoryless_cross_entropy():
    delay = 30
    # Memoryless strategy: blank with certainty for delay + 10 steps, then uniform over 8.
    per_step = np.concatenate([np.zeros(delay + 10), np.full(10, math.log(8))])
    assert math.isclose(data.copy_memory_baseline(delay), per_step.mean(), rel_tol=1e-12)
    assert math.isclose(data.copy_memory_baseline(100), 10 * math.log(8) / 120)


def test_temporal_order_labels_follow_the_marked_symbols(key):
    seq_len, batch = 30, 200
    xs, labels = data.temporal_order(key, batch, seq_len)
    tokens, labels = np.asarray(xs).argmax(-1), np.asarray(labels)
    np.testing.assert_array_equal(tokens[0], 6)  # B
    np.testing.assert_array_equal(tokens[-1], 7)  # E
    for b in range(batch):
        (where,) = np.nonzero(tokens[:, b] >= 4)
        marks = where[(where > 0) & (where < seq_len - 1)]
        assert len(marks) == 2
        t1, t2 = marks
        assert 3 <= t1 <= 6 and 15 <= t2 <= 18
        order = {(4, 4): 0, (4, 5): 1, (5, 4): 2, (5, 5): 3}[(tokens[t1, b], tokens[t2, b])]
        assert order == labels[b]
    assert set(np.unique(labels)) == {0, 1, 2, 3}


@pytest.mark.parametrize("task", [data.adding, data.copy_memory, data.temporal_order])
def test_tasks_are_pure_functions_of_the_key(task, key):
    fn = jax.jit(task, static_argnums=(1, 2))
    first, again = fn(key, 4, 12), fn(key, 4, 12)
    other = fn(jax.random.fold_in(key, 1), 4, 12)
    jax.tree.map(np.testing.assert_array_equal, first, again)
    assert not np.array_equal(np.asarray(first[0]), np.asarray(other[0]))


@pytest.mark.parametrize(
    "task, size, match",
    [
        (data.adding, 1, "seq_len must be >= 2"),
        (data.copy_memory, 0, "delay must be a positive int"),
        (data.temporal_order, 9, "seq_len must be >= 10"),
    ],
)
def test_bad_sizes_are_rejected(task, size, match, key):
    with pytest.raises(ValueError, match=match):
        task(key, 4, size)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        task(key, 0, 12)
