"""`jaxseq.unroll`'s machinery: hoisting, unroll factor, remat, lengths, reverse, jit, vmap.

test_cells.py runs every cell through the plain unroll against NumPy; here the
cells only exercise the scan around them. XLA compilation dominates the
runtime, so the tests share one jitted function per (cell, static options).
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import jaxprs
import numpy as np
import pytest

import jaxseq
from jaxseq import initializers

T, IN, H, B = 7, 3, 4, 3  # T is divisible by neither 2 nor 3
_BIAS = initializers.normal(0.1)  # non-zero biases, so every bias path matters

CELLS = {
    "elman_tanh": jaxseq.elman(H, b_init=_BIAS),
    "elman_relu": jaxseq.elman(H, activation="relu", b_init=_BIAS),
    "lstm": jaxseq.lstm(H, b_init=_BIAS),
    "lstm_peephole": jaxseq.lstm(
        H, peephole=True, peephole_init=initializers.normal(0.5), b_init=_BIAS
    ),
    "gru": jaxseq.gru(H, b_init=_BIAS),
    "gru_reset_before": jaxseq.gru(H, reset_after=False, b_init=_BIAS),
}
# The scan machinery is the same for every cell: one per family, array and tuple carries.
MECHANICS = ["elman_relu", "lstm_peephole", "gru_reset_before"]
TOL = dict(rtol=1e-5, atol=1e-6)


@functools.cache
def _unroll(name: str, **options) -> jax.stages.Wrapped:
    """`(params, xs, carry, lengths=None) -> (carry, ys)`, jitted once per cell and options."""
    return jax.jit(functools.partial(jaxseq.unroll, CELLS[name], **options))


@functools.cache
def _step(name: str) -> jax.stages.Wrapped:
    return jax.jit(CELLS[name].step)


def _normal(key: jax.Array, shape: tuple[int, ...]) -> np.ndarray:
    """N(0, 1) entries of a small `shape`, cut from one fixed-size draw.

    `jax.random` compiles once per output shape, which costs more than most
    tests here; one draw size keeps it to one compilation.
    """
    return np.asarray(jax.random.normal(key, (512,)))[: math.prod(shape)].reshape(shape)


def _setup(name: str, key: jax.Array, batch_shape=(B,), num_steps=T):
    """Params, inputs `[T, *batch, IN]` and a non-zero initial carry."""
    cell = CELLS[name]
    params = cell.init(jax.random.fold_in(key, 0), IN)
    xs = _normal(jax.random.fold_in(key, 1), (num_steps, *batch_shape, IN))
    leaves, tree = jax.tree.flatten(cell.initial_carry(params, batch_shape))
    carry = jax.tree.unflatten(
        tree, [_normal(jax.random.fold_in(key, 2 + i), z.shape) for i, z in enumerate(leaves)]
    )
    return params, jnp.asarray(xs), jax.tree.map(jnp.asarray, carry)


def _example(tree, index):
    return jax.tree.map(lambda a: a[index], tree)


@pytest.mark.parametrize("name", CELLS)
def test_hoisted_projection_equals_scan_over_step(name, key):
    cell = CELLS[name]
    params, xs, carry0 = _setup(name, key)

    @jax.jit
    def both(params, xs, carry):
        # The reference does not hoist: the whole `step`, projection included, is scanned.
        unhoisted = jax.lax.scan(lambda c, x_t: cell.step(params, c, x_t), carry, xs)
        return jaxseq.unroll(cell, params, xs, carry, hoist=True), unhoisted

    actual, expected = both(params, xs, carry0)
    chex.assert_trees_all_close(actual, expected, **TOL)
    chex.assert_shape(actual[1], (T, B, H))


@pytest.mark.parametrize("name", CELLS)
def test_input_projection_is_outside_the_scan_body(name, key):
    cell = CELLS[name]
    params, xs, carry0 = _setup(name, key)
    xp_t = jax.eval_shape(cell.project, params, xs[0])

    unroll_jaxpr = jax.make_jaxpr(functools.partial(jaxseq.unroll, cell, hoist=True))(
        params, xs, carry0
    )
    (scan,) = jaxprs.find(unroll_jaxpr.jaxpr, "scan")  # inside the custom VJP for most cells
    body_matmuls = jaxprs.count(scan.params["jaxpr"].jaxpr, "dot_general")
    recur_matmuls = jaxprs.count(
        jax.make_jaxpr(cell.recur)(params, carry0, xp_t).jaxpr, "dot_general"
    )
    step_matmuls = jaxprs.count(
        jax.make_jaxpr(cell.step)(params, carry0, xs[0]).jaxpr, "dot_general"
    )

    assert body_matmuls == recur_matmuls == step_matmuls - 1  # x_t @ w_x left the loop

    in_step = jax.make_jaxpr(functools.partial(jaxseq.unroll, cell, hoist=False))(
        params, xs, carry0
    )
    (scan,) = jaxprs.find(in_step.jaxpr, "scan")
    assert jaxprs.count(scan.params["jaxpr"].jaxpr, "dot_general") == step_matmuls
    assert (
        jaxprs.count(unroll_jaxpr.jaxpr, "dot_general") == body_matmuls + 1
    )  # one matmul for all t


@pytest.mark.parametrize(
    ("name", "unroll", "reverse"),
    [("elman_relu", 2, False), ("lstm_peephole", 3, True), ("gru_reset_before", 2, True)],
)
def test_unroll_factor_does_not_change_results(name, unroll, reverse, key):
    params, xs, carry0 = _setup(name, key)
    lengths = np.array([T, 4, 0], np.int32)
    expected = _unroll(name, reverse=reverse)(params, xs, carry0, lengths=lengths)
    actual = _unroll(name, reverse=reverse, unroll=unroll)(params, xs, carry0, lengths=lengths)
    chex.assert_trees_all_close(actual, expected, **TOL)


def test_remat_gives_the_same_outputs(key):
    name = "lstm_peephole"
    params, xs, carry0 = _setup(name, key)
    lengths = np.array([T, 2, 5], np.int32)
    expected = _unroll(name)(params, xs, carry0, lengths=lengths)
    actual = _unroll(name, remat=True)(params, xs, carry0, lengths=lengths)
    chex.assert_trees_all_close(actual, expected, **TOL)


def _per_example_loop(name, params, xs, carry0, lengths, reverse):
    """Each example alone, cut to its own length, by a Python loop over `step` (NumPy indexing).

    With `reverse` the loop reads t = length-1, ..., 0. Returns the final carry
    and the outputs `[T, *batch, H]`, zero past each example's length.
    """
    xs, carry0, lengths = np.asarray(xs), jax.tree.map(np.asarray, carry0), np.asarray(lengths)
    final, ys = jax.tree.map(np.copy, carry0), np.zeros((xs.shape[0], *lengths.shape, H))
    for index in np.ndindex(*lengths.shape):
        carry = _example(carry0, index)
        for t in reversed(range(lengths[index])) if reverse else range(lengths[index]):
            carry, ys[(t, *index)] = _step(name)(params, carry, xs[(t, *index)])
        for leaf, value in zip(jax.tree.leaves(final), jax.tree.leaves(carry)):
            leaf[index] = value
    return final, ys


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize(
    ("name", "batch_shape"),
    [(name, (B,)) for name in MECHANICS] + [("lstm_peephole", (2, 3))],
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v,
)
def test_lengths_match_per_example_loop(name, batch_shape, reverse, key):
    params, xs, carry0 = _setup(name, key, batch_shape)
    lengths = np.array([T, 1, 0, 4, 6, 3][: math.prod(batch_shape)], np.int32).reshape(batch_shape)

    actual = _unroll(name, reverse=reverse)(params, xs, carry0, lengths=lengths)
    expected = _per_example_loop(name, params, xs, carry0, lengths, reverse)

    chex.assert_trees_all_close(actual, expected, **TOL)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_full_lengths_equal_no_lengths(reverse, key):
    name = "lstm_peephole"
    params, xs, carry0 = _setup(name, key)
    expected = _unroll(name, reverse=reverse)(params, xs, carry0)
    actual = _unroll(name, reverse=reverse)(params, xs, carry0, lengths=np.full((B,), T, np.int32))
    chex.assert_trees_all_close(actual, expected, **TOL)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", MECHANICS)
def test_zero_lengths_keep_initial_carry_and_emit_zeros(name, reverse, key):
    params, xs, carry0 = _setup(name, key)
    lengths = np.zeros((B,), np.int32)

    carry, ys = _unroll(name, reverse=reverse)(params, xs, carry0, lengths=lengths)

    chex.assert_trees_all_equal(carry, carry0)
    chex.assert_trees_all_equal(ys, np.zeros((T, B, H), np.float32))


@pytest.mark.parametrize("dtype", [jnp.int8, jnp.uint8])
def test_lengths_of_any_integer_dtype(dtype, key):
    params, xs, carry0 = _setup("elman_relu", key)
    lengths = np.array([T, 2, 0])
    run = _unroll("elman_relu", reverse=True)
    expected = run(params, xs, carry0, lengths=lengths.astype(np.int32))
    actual = run(params, xs, carry0, lengths=jnp.asarray(lengths, dtype))
    chex.assert_trees_all_close(actual, expected, **TOL)


def test_jitted_unroll_traces_once_for_new_values_of_the_same_shape(key):
    cell = CELLS["lstm"]

    @jax.jit
    @functools.partial(chex.assert_max_traces, n=1)
    def run(params, xs, carry, lengths):
        return jaxseq.unroll(cell, params, xs, carry, lengths=lengths, reverse=True)

    for i in range(3):
        params, xs, carry0 = _setup("lstm", jax.random.fold_in(key, i))
        run(params, xs, carry0, np.array([T - i, i, 1], np.int32))

    # The counter is live: a new shape is a second trace.
    params, xs, carry0 = _setup("lstm", key, num_steps=T + 1)
    with pytest.raises(AssertionError, match="traced > 1 times"):
        run(params, xs, carry0, np.array([T, 0, 1], np.int32))


def test_vmap_over_a_batch_of_lengths(key):
    name = "lstm_peephole"
    params, xs, carry0 = _setup(name, key)
    run = _unroll(name, reverse=True)
    many_lengths = np.array([[T, 0, 3], [1, 2, T], [5, 5, 5], [0, 0, 0]], np.int32)  # [N, B]

    actual = jax.vmap(lambda lengths: run(params, xs, carry0, lengths=lengths))(many_lengths)
    actual = jax.tree.map(np.asarray, actual)

    for n, lengths in enumerate(many_lengths):
        expected = run(params, xs, carry0, lengths=lengths)
        chex.assert_trees_all_close(_example(actual, n), expected, **TOL)


def test_vmap_over_examples_with_their_lengths(key):
    name = "gru_reset_before"
    params, xs, carry0 = _setup(name, key)
    run = _unroll(name, reverse=True)
    lengths = np.array([T, 0, 3], np.int32)

    # Each example alone has batch shape (); vmap adds the batch axis back.
    per_example = jax.vmap(
        lambda x, c, length: run(params, x, c, lengths=length), in_axes=(1, 0, 0), out_axes=(0, 1)
    )
    expected = run(params, xs, carry0, lengths=lengths)
    chex.assert_trees_all_close(per_example(xs, carry0, lengths), expected, **TOL)
