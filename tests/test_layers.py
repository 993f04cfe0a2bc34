"""`jaxseq.rnn`: stacked and bidirectional layers, final states, initial carry, dropout."""

import functools
import math
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxseq

T, IN, H, B = 5, 3, 4, 3
LENGTHS = np.array([T, 2, 0], np.int32)  # full, padded, empty
CELLS = {"elman_tanh": jaxseq.elman(H), "lstm": jaxseq.lstm(H), "gru": jaxseq.gru(H)}


@functools.cache
def _layer(name: str, num_layers: int, bidirectional: bool, dropout: float = 0.0):
    return jaxseq.rnn(
        CELLS[name], num_layers=num_layers, bidirectional=bidirectional, dropout=dropout
    )


@functools.cache
def _apply(name: str, num_layers: int, bidirectional: bool, dropout: float = 0.0):
    """`layer.apply`, jitted once per configuration."""
    return jax.jit(_layer(name, num_layers, bidirectional, dropout).apply)


@functools.cache
def _unroll(name: str):
    """A forward `jaxseq.unroll` with explicit carry and lengths, jitted once per cell."""
    return jax.jit(functools.partial(jaxseq.unroll, CELLS[name]))


def _normal(key: jax.Array, shape: tuple[int, ...], scale: float = 1.0) -> jax.Array:
    """N(0, scale²) entries of a small `shape`, cut from one fixed-size draw.

    `jax.random` (like any eager op) compiles once per output shape, which
    costs more than most tests here; one draw size keeps it to one compilation.
    """
    pool = scale * np.asarray(jax.random.normal(key, (512,)))
    return jnp.asarray(pool[: math.prod(shape)].reshape(shape))


def _random_like(tree, key: jax.Array):
    """A tree of the same structure and shapes with N(0, 0.5²) entries."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = [jax.random.fold_in(key, i) for i in range(len(leaves))]
    return jax.tree.unflatten(treedef, [_normal(k, a.shape, 0.5) for k, a in zip(keys, leaves)])


def _setup(name, key, num_layers, bidirectional):
    """Random params shaped by `layer.init` (non-zero biases too) and inputs `[T, B, IN]`."""
    layer = _layer(name, num_layers, bidirectional)
    shapes = jax.eval_shape(lambda k: layer.init(k, IN), key)
    params = _random_like(shapes, jax.random.fold_in(key, 0))
    return params, _normal(jax.random.fold_in(key, 1), (T, B, IN))


def _random_stacked_carry(name, params, key, count):
    """A non-zero carry with every leaf `[count, B, H]`."""
    return _random_like(CELLS[name].initial_carry(params[0][0], (count, B)), key)


def _reverse_within_lengths(xs, lengths) -> np.ndarray:
    """`xs[:length]` reversed for every example; the padding stays in place."""
    out = np.array(xs)
    for b, length in enumerate(np.asarray(lengths)):
        out[:length, b] = out[:length, b][::-1]
    return out


def _manual(name, params, xs, carry, lengths):
    """The stack written out with single-direction unrolls and NumPy reversals."""
    cell, run = CELLS[name], _unroll(name)
    carry = jax.tree.map(np.asarray, carry)  # NumPy indexing compiles nothing
    num_dirs = len(params[0])
    inputs, finals = xs, []
    for layer, layer_params in enumerate(params):
        outputs = []
        for d, p in enumerate(layer_params):
            index = layer * num_dirs + d
            c0 = (
                cell.initial_carry(p, (B,))
                if carry is None
                else jax.tree.map(lambda a, i=index: a[i], carry)
            )
            if d == 0:
                c, ys = run(p, inputs, c0, lengths=lengths)
            else:  # read each sequence from its own last valid step back to 0
                c, ys = run(p, _reverse_within_lengths(inputs, lengths), c0, lengths=lengths)
                ys = _reverse_within_lengths(ys, lengths)
            finals.append(c)
            outputs.append(ys)
        inputs = np.concatenate(outputs, axis=-1)
    return inputs, jax.tree.map(lambda *leaves: np.stack(leaves), *finals)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("name", CELLS)
def test_output_and_final_shapes(name, num_layers, bidirectional, key):
    layer = _layer(name, num_layers, bidirectional)
    num_dirs = 2 if bidirectional else 1
    params = jax.eval_shape(lambda k: layer.init(k, IN), key)  # shapes only, nothing runs
    xs = jax.ShapeDtypeStruct((T, B, IN), jnp.float32)
    lengths = jax.ShapeDtypeStruct((B,), jnp.int32)

    ys, final = jax.eval_shape(lambda p, x, n: layer.apply(p, x, lengths=n), params, xs, lengths)

    assert [len(p) for p in params] == [num_dirs] * num_layers  # params[layer][direction]
    for layer_index, layer_params in enumerate(params):
        for p in layer_params:  # layers above the first read both directions' outputs
            assert p.w_x.shape[0] == (IN if layer_index == 0 else num_dirs * H)
    chex.assert_shape(ys, (T, B, num_dirs * H))
    assert layer.output_size == num_dirs * H
    chex.assert_tree_shape_prefix(final, (num_layers * num_dirs, B, H))
    if name == "lstm":
        assert isinstance(final, jaxseq.LSTMCarry)
        h_n, c_n = final  # PyTorch's (h_n, c_n)
        chex.assert_equal_shape([h_n, c_n])
    else:
        chex.assert_shape(final, (num_layers * num_dirs, B, H))


@pytest.mark.parametrize(
    ("name", "num_layers", "bidirectional", "with_carry"),
    [("lstm", 2, True, False), ("lstm", 2, True, True), ("gru", 3, False, False)],
    ids=["lstm-2-bi", "lstm-2-bi-given_carry", "gru-3-uni"],
)
def test_equals_manual_composition_of_unrolls(name, num_layers, bidirectional, with_carry, key):
    params, xs = _setup(name, key, num_layers, bidirectional)
    count = num_layers * (2 if bidirectional else 1)
    carry = (
        _random_stacked_carry(name, params, jax.random.fold_in(key, 1), count)
        if with_carry
        else None
    )
    lengths = LENGTHS

    actual = _apply(name, num_layers, bidirectional)(params, xs, carry, lengths=lengths)
    expected = _manual(name, params, xs, carry, lengths)

    chex.assert_trees_all_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_given_carry_changes_the_outputs(key):
    params, xs = _setup("lstm", key, 2, True)
    carry = _random_stacked_carry("lstm", params, jax.random.fold_in(key, 1), 4)
    lengths = LENGTHS
    apply = _apply("lstm", 2, True)

    ys_zero, _ = apply(params, xs, None, lengths=lengths)
    ys_given, _ = apply(params, xs, carry, lengths=lengths)

    assert not np.allclose(ys_zero[:, :2], ys_given[:, :2])  # the non-empty examples


def test_final_states_match_outputs_without_lengths(key):
    params, xs = _setup("lstm", key, 2, True)
    ys, final = _apply("lstm", 2, True)(params, xs)

    last_forward, last_backward = final.h[2], final.h[3]  # index layer * D + direction
    chex.assert_trees_all_close(last_forward, ys[-1, :, :H])
    chex.assert_trees_all_close(last_backward, ys[0, :, H:])


def test_final_states_match_outputs_with_lengths(key):
    params, xs = _setup("lstm", key, 2, True)
    ys, final = _apply("lstm", 2, True)(params, xs, None, lengths=LENGTHS)

    for b, length in enumerate(LENGTHS):
        if length == 0:  # nothing read: the initial (zero) state
            chex.assert_trees_all_equal(final.h[:, b], np.zeros((4, H), np.float32))
            continue
        chex.assert_trees_all_close(final.h[2, b], ys[length - 1, b, :H])
        chex.assert_trees_all_close(final.h[3, b], ys[0, b, H:])


def test_dropout_needs_a_key(key):
    params, xs = _setup("elman_tanh", key, 2, False)
    without_key = _apply("elman_tanh", 2, False, dropout=0.5)(params, xs)
    no_dropout = _apply("elman_tanh", 2, False)(params, xs)
    chex.assert_trees_all_equal(without_key, no_dropout)


def test_dropout_with_a_key_is_random_but_reproducible(key):
    params, xs = _setup("elman_tanh", key, 2, False)
    apply = _apply("elman_tanh", 2, False, dropout=0.5)
    k_a, k_b = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)

    ys_a, final_a = apply(params, xs, key=k_a)
    ys_a_again, final_a_again = apply(params, xs, key=k_a)
    ys_b, _ = apply(params, xs, key=k_b)
    ys_none, final_none = apply(params, xs)

    chex.assert_trees_all_equal((ys_a, final_a), (ys_a_again, final_a_again))
    assert not np.allclose(ys_a, ys_b)
    assert not np.allclose(ys_a, ys_none)
    # Dropout acts between layers only: the first layer's final state is untouched.
    chex.assert_trees_all_equal(final_a[0], final_none[0])


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_dropout_rate_out_of_range_raises(rate):
    with pytest.raises(
        ValueError, match=rf"dropout must lie in \[0, 1\), got {re.escape(str(rate))}$"
    ):
        jaxseq.rnn(CELLS["gru"], num_layers=2, dropout=rate)
