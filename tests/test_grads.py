"""Backpropagation through time: finite differences, truncation, remat, shapes.

Every test runs in float64 (`jax.enable_x64`, cells made with
`dtype=jnp.float64`), so finite differences are tight. XLA compilation
dominates the runtime, so jitted losses and gradients are built once and
shared, and a test that compares variants computes them in one jitted call.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxseq

T, IN, H, B = 5, 3, 4, 2
LENGTHS = (T, 2)  # one full and one padded example

CELLS = {
    "elman_tanh": jaxseq.elman(H, dtype=jnp.float64),
    "elman_relu": jaxseq.elman(H, activation="relu", dtype=jnp.float64),
    "lstm": jaxseq.lstm(H, dtype=jnp.float64),
    "lstm_peephole": jaxseq.lstm(H, peephole=True, dtype=jnp.float64),
    "gru": jaxseq.gru(H, dtype=jnp.float64),
    "gru_reset_before": jaxseq.gru(H, reset_after=False, dtype=jnp.float64),
}


@pytest.fixture(autouse=True)
def x64():
    """Every test here runs in float64."""
    with jax.enable_x64(True):
        yield


def _normal(key: jax.Array, shape: tuple[int, ...], scale: float = 1.0) -> jax.Array:
    """float64 N(0, scale²) entries of a small `shape`, cut from one fixed-size draw.

    `jax.random` (like any eager op) compiles once per output shape, which
    costs more than most tests here; one draw size keeps it to one compilation.
    """
    pool = scale * np.asarray(jax.random.normal(key, (512,), jnp.float64))
    return jnp.asarray(pool[: math.prod(shape)].reshape(shape))


def _random_params(init, key: jax.Array, input_size: int):
    """Params with the structure, shapes and dtypes `init` gives, every entry N(0, 0.5²).

    Random biases, `b_hn` and peepholes (zeros after `init`) make every
    parameter's gradient non-trivial.
    """
    leaves, tree = jax.tree.flatten(jax.eval_shape(lambda k: init(k, input_size), key))
    keys = [jax.random.fold_in(key, i) for i in range(len(leaves))]
    return jax.tree.unflatten(tree, [_normal(k, a.shape, 0.5) for k, a in zip(keys, leaves)])


def _setup(name: str, key: jax.Array):
    params = _random_params(CELLS[name].init, jax.random.fold_in(key, 0), IN)
    xs = _normal(jax.random.fold_in(key, 1), (T, B, IN))
    return params, xs


def _loss_of(carry, ys) -> jax.Array:
    """A scalar that depends non-linearly on every output and every carry leaf."""
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(carry))


def _loss(cell, params, xs, lengths=None, **options) -> jax.Array:
    return _loss_of(*jaxseq.unroll(cell, params, xs, lengths=lengths, **options))


@functools.cache
def _jitted_loss(name: str):
    """`(params, xs) -> loss` of a plain unroll, jitted once per cell."""
    return jax.jit(functools.partial(_loss, CELLS[name]))


def _grads(name: str, params, xs, lengths, variants: dict[str, dict]) -> dict:
    """∂loss/∂params for every `unroll` option set in `variants`, in one jitted call."""

    @jax.jit
    def run(params, xs, lengths):
        return {
            label: jax.grad(_loss, argnums=1)(CELLS[name], params, xs, lengths, **options)
            for label, options in variants.items()
        }

    return run(params, xs, lengths)


@pytest.mark.parametrize("name", CELLS)
def test_check_grads_through_unroll(name, key):
    params, xs = _setup(name, key)
    loss = _jitted_loss(name)

    check_grads(loss, (params, xs), order=1, modes=["rev"])
    chex.assert_trees_all_equal_shapes_and_dtypes(
        jax.eval_shape(jax.grad(loss), params, xs), params
    )


def test_check_grads_with_lengths_and_reverse(key):
    """Masking and the within-length reversal are differentiable (the padded example too)."""
    name = "lstm_peephole"
    params, xs = _setup(name, key)
    loss = jax.jit(functools.partial(_loss, CELLS[name], reverse=True))
    lengths = jnp.array(LENGTHS)
    check_grads(lambda p, x: loss(p, x, lengths), (params, xs), order=1, modes=["rev"])


def test_input_gradient_matches_central_differences(key):
    name = "gru"
    params, xs = _setup(name, key)
    loss = _jitted_loss(name)
    grad_xs = jax.jit(jax.grad(loss, argnums=1))(params, xs)

    eps, xs = 1e-6, np.asarray(xs)
    expected = np.zeros(xs.shape)
    for index in np.ndindex(*xs.shape):
        step = np.zeros(xs.shape)
        step[index] = eps
        expected[index] = (loss(params, xs + step) - loss(params, xs - step)) / (2 * eps)
    np.testing.assert_allclose(grad_xs, expected, rtol=1e-6, atol=1e-7)


def _truncated_loop_loss(cell, params, xs, truncate, reverse):
    """Truncated BPTT written out: stop the carry's gradient before every k-th step read."""
    carry = cell.initial_carry(params, xs.shape[1:-1])
    ys = [None] * xs.shape[0]
    times = range(xs.shape[0])
    for s, t in enumerate(reversed(times) if reverse else times):
        if s > 0 and s % truncate == 0:
            carry = jax.lax.stop_gradient(carry)
        carry, ys[t] = cell.step(params, carry, xs[t])
    return _loss_of(carry, jnp.stack(ys))


TRUNCATIONS = {"k2": (2, False), "k3_reverse": (3, True)}


@functools.cache
def _truncation_grads() -> tuple[dict, dict]:
    """Gradients of an Elman unroll with and without truncation, and of the written-out loop.

    Computed once (two compilations) and shared by the truncation tests.
    """
    name = "elman_tanh"
    params, xs = _setup(name, jax.random.key(0))
    variants = {label: dict(truncate=k, reverse=r) for label, (k, r) in TRUNCATIONS.items()}
    variants |= {  # truncation runs autodiff through the scan: compare like with like
        "full": dict(bptt="autodiff"),
        "full_reverse": dict(reverse=True, bptt="autodiff"),
        "T": dict(truncate=T),
        "2T_reverse": dict(truncate=2 * T, reverse=True),
    }

    @jax.jit
    def loop_grads(params, xs):
        grad = jax.grad(_truncated_loop_loss, argnums=1)
        return {label: grad(CELLS[name], params, xs, k, r) for label, (k, r) in TRUNCATIONS.items()}

    return _grads(name, params, xs, None, variants), loop_grads(params, xs)


def test_truncate_of_at_least_T_is_full_bptt():
    grads, _ = _truncation_grads()
    chex.assert_trees_all_equal(grads["T"], grads["full"])
    chex.assert_trees_all_equal(grads["2T_reverse"], grads["full_reverse"])


@pytest.mark.parametrize("label", TRUNCATIONS)
def test_truncate_below_T_matches_python_loop(label):
    grads, expected = _truncation_grads()
    chex.assert_trees_all_close(grads[label], expected[label], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("label", TRUNCATIONS)
def test_truncate_below_T_differs_from_full_bptt(label):
    grads, _ = _truncation_grads()
    full = grads["full_reverse" if TRUNCATIONS[label][1] else "full"]
    with pytest.raises(AssertionError):
        chex.assert_trees_all_close(grads[label], full, rtol=1e-3, atol=1e-6)


def test_truncate_with_lengths_matches_each_example_truncated(key):
    """Truncation counts valid steps only: padding must not cut a short sequence's gradient."""
    name, truncate = "elman_tanh", 2
    cell = CELLS[name]
    params, xs = _setup(name, key)
    lengths = (T, 3)
    variants = {
        "forward": dict(truncate=truncate),
        "reverse": dict(truncate=truncate, reverse=True),
    }
    grads = _grads(name, params, xs, jnp.array(lengths), variants)

    @jax.jit
    def per_example_grads(params, xs):
        # Outputs past a length are zeros and add sin(0) = 0, so the losses just add up.
        grad = jax.grad(_truncated_loop_loss, argnums=1)
        return {
            label: [
                grad(cell, params, xs[: lengths[b], b], truncate, label == "reverse")
                for b in range(B)
            ]
            for label in variants
        }

    expected = per_example_grads(params, xs)
    for label in variants:
        summed = jax.tree.map(lambda a, b: np.asarray(a) + np.asarray(b), *expected[label])
        chex.assert_trees_all_close(grads[label], summed, rtol=1e-10, atol=1e-12)


def test_remat_gives_the_same_gradients(key):
    name = "gru_reset_before"
    params, xs = _setup(name, key)
    variants = {  # T = 5: chunks of 3 steps, the last one padded
        "plain": dict(reverse=True),
        "remat": dict(reverse=True, remat=True),
        "truncated": dict(truncate=2),
        "truncated_remat": dict(truncate=2, remat=True),
    }
    grads = _grads(name, params, xs, jnp.array(LENGTHS), variants)
    chex.assert_trees_all_close(grads["remat"], grads["plain"], rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(grads["truncated_remat"], grads["truncated"], rtol=1e-6)
    chex.assert_trees_all_equal_shapes_and_dtypes(grads["remat"], params)


def test_check_grads_through_jitted_bidirectional_stack(key):
    layer = jaxseq.rnn(CELLS["elman_tanh"], num_layers=2, bidirectional=True)
    params = _random_params(layer.init, jax.random.fold_in(key, 0), IN)
    xs = _normal(jax.random.fold_in(key, 1), (T, B, IN))
    lengths = jnp.array(LENGTHS)

    @jax.jit
    def loss(params, xs, lengths):
        ys, final = layer.apply(params, xs, lengths=lengths)
        return _loss_of(final, ys)

    check_grads(lambda p, x: loss(p, x, lengths), (params, xs), order=1, modes=["rev"])
    grads = jax.eval_shape(jax.grad(loss), params, xs, lengths)
    chex.assert_trees_all_equal_shapes_and_dtypes(grads, params)
