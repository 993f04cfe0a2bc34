"""Flax linen interop: weights both ways, carries, `nn.RNN` parity and the `LinenCell` adapter.

Compilation dominates these tiny tests, so random values come from one pool of
normals drawn once from `jax.random.key(0)` (one compile), param structures from
`jax.eval_shape` of the real `init`, and each comparison runs in one `jax.jit`.
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxseq
from jaxseq.interop import (
    LinenCell,
    carry_from_linen,
    carry_to_linen,
    from_linen,
    to_linen,
)

T, B, IN, H = 5, 2, 3, 4  # time, batch, input and hidden sizes
ATOL = 1e-5

FLAX_CELLS = {
    "lstm": lambda: nn.LSTMCell(H),
    "optimized_lstm": lambda: nn.OptimizedLSTMCell(H),
    "gru": lambda: nn.GRUCell(H),
    "simple_tanh": lambda: nn.SimpleCell(H),
    "simple_relu": lambda: nn.SimpleCell(H, activation_fn=nn.relu),
}

# (jaxseq cell, the Flax cell with the same activations)
JAXSEQ_CELLS = {
    "lstm": (lambda: jaxseq.lstm(H), lambda: nn.LSTMCell(H)),
    "lstm_optimized": (lambda: jaxseq.lstm(H), lambda: nn.OptimizedLSTMCell(H)),
    "gru": (lambda: jaxseq.gru(H), lambda: nn.GRUCell(H)),
    "elman_tanh": (lambda: jaxseq.elman(H), lambda: nn.SimpleCell(H)),
    "elman_relu": (lambda: jaxseq.elman(H, activation="relu"), lambda: nn.SimpleCell(H, nn.relu)),
}

ADAPTED_CELLS = {
    "gru": lambda: jaxseq.gru(H),
    "lstm": lambda: jaxseq.lstm(H),
    "elman": lambda: jaxseq.elman(H),
}


@functools.cache
def _pool() -> np.ndarray:
    return np.asarray(jax.random.normal(jax.random.key(0), (4096,)), np.float32)


def _fill(tree, salt: int):
    """Arrays with the shapes of `tree`'s leaves, N(0, 0.5²) values from the pool."""
    leaves, treedef = jax.tree.flatten(tree)
    start, out = 97 * salt, []
    for leaf in leaves:
        size = int(np.prod(leaf.shape))
        out.append(jnp.asarray(0.5 * _pool()[start : start + size].reshape(leaf.shape)))
        start += size
    return jax.tree.unflatten(treedef, out)


def _data():
    """Batch-major inputs `xs: [B, T, IN]` and one step `x_t: [B, IN]`."""
    return _fill(jax.ShapeDtypeStruct((B, T, IN), jnp.float32), 1), _fill(
        jax.ShapeDtypeStruct((B, IN), jnp.float32), 2
    )


def _flax_carry(module, x_t):
    """A non-zero Flax carry with the structure of `module.initialize_carry`."""
    return _fill(jax.eval_shape(lambda: module.initialize_carry(jax.random.key(0), x_t.shape)), 3)


def _time_major(xs):
    return jnp.swapaxes(xs, 0, 1)


@pytest.mark.parametrize("name", FLAX_CELLS)
def test_from_linen_step_matches_flax(name, key):
    module = FLAX_CELLS[name]()
    xs, x_t = _data()
    carry = _flax_carry(module, x_t)
    variables = _fill(jax.eval_shape(module.init, key, carry, x_t), 4)
    cell, params = from_linen(module, variables["params"])

    @jax.jit
    def both(variables, params, carry, x_t):
        jax_carry = carry_from_linen(carry)
        return module.apply(variables, carry, x_t), cell.step(params, jax_carry, x_t)

    (flax_carry, flax_y), (jax_carry, jax_y) = both(variables, params, carry, x_t)
    chex.assert_shape(flax_y, (B, H))
    chex.assert_trees_all_close(jax_y, flax_y, atol=ATOL)
    chex.assert_trees_all_close(carry_to_linen(jax_carry), flax_carry, atol=ATOL)


@pytest.mark.parametrize("name", FLAX_CELLS)
def test_from_linen_sequence_matches_flax_rnn(name, key):
    """Whole sequences, and `seq_lengths` in both directions.

    Final carries agree; outputs agree at valid steps only: Flax does not mask,
    its cell keeps running over the padding (forward: its outputs there are the
    unmasked run's), where `unroll` emits zeros.
    """
    module = FLAX_CELLS[name]()
    rnn = nn.RNN(module, return_carry=True)
    backward = nn.RNN(module, return_carry=True, reverse=True, keep_order=True)
    xs, _ = _data()
    lengths = jnp.array([T, 3])
    variables = _fill(jax.eval_shape(rnn.init, key, xs), 5)
    cell, params = from_linen(module, variables["params"]["cell"])

    @jax.jit
    def run(variables, params, xs, lengths):
        xs_tm = _time_major(xs)
        flax = [
            rnn.apply(variables, xs),
            rnn.apply(variables, xs, seq_lengths=lengths),
            backward.apply(variables, xs, seq_lengths=lengths),
        ]
        ours = [
            jaxseq.unroll(cell, params, xs_tm),
            jaxseq.unroll(cell, params, xs_tm, lengths=lengths),
            jaxseq.unroll(cell, params, xs_tm, lengths=lengths, reverse=True),
        ]
        return flax, [(carry_to_linen(c), _time_major(ys)) for c, ys in ours]

    flax, ours = run(variables, params, xs, lengths)
    chex.assert_shape(flax[0][1], (B, T, H))
    chex.assert_trees_all_close(ours[0], flax[0], atol=ATOL)
    valid = (jnp.arange(T)[None, :] < lengths[:, None])[..., None]  # [B, T, 1]
    for (flax_carry, flax_ys), (jax_carry, jax_ys) in zip(flax[1:], ours[1:]):
        chex.assert_trees_all_close(jax_carry, flax_carry, atol=ATOL)
        flax_valid = jnp.where(valid, flax_ys, jnp.zeros_like(flax_ys))
        chex.assert_trees_all_close(jax_ys, flax_valid, atol=ATOL)
    chex.assert_trees_all_close(flax[1][1], flax[0][1], atol=ATOL)  # no masking in Flax


@pytest.mark.parametrize("name", JAXSEQ_CELLS)
def test_to_linen_round_trip(name, key):
    make_cell, make_module = JAXSEQ_CELLS[name]
    cell, module = make_cell(), make_module()
    _, x_t = _data()
    params = _fill(
        jax.eval_shape(lambda k: cell.init(k, IN), key), 6
    )  # random, in cell.init's structure
    carry = carry_from_linen(_flax_carry(module, x_t))

    linen_params = to_linen(cell, params)
    reference = jax.eval_shape(module.init, key, carry_to_linen(carry), x_t)["params"]
    assert jax.tree.structure(linen_params) == jax.tree.structure(reference)
    chex.assert_trees_all_equal_shapes(linen_params, reference)

    @jax.jit
    def both(linen_params, params, carry, x_t):
        flax = module.apply({"params": linen_params}, carry_to_linen(carry), x_t)
        return flax, cell.step(params, carry, x_t)

    (flax_carry, flax_y), (jax_carry, jax_y) = both(linen_params, params, carry, x_t)
    chex.assert_trees_all_close(jax_y, flax_y, atol=ATOL)
    chex.assert_trees_all_close(carry_to_linen(jax_carry), flax_carry, atol=ATOL)

    _, back = from_linen(module, linen_params)
    assert type(back) is type(params)
    chex.assert_trees_all_equal(back, params)


@pytest.mark.parametrize("name", ADAPTED_CELLS)
def test_linen_cell_in_flax_rnn_matches_unroll(name, key):
    """Outputs, final carries (also with `seq_lengths`) and gradients equal `unroll`'s."""
    cell = ADAPTED_CELLS[name]()
    rnn = nn.RNN(LinenCell(cell), return_carry=True)
    xs, _ = _data()
    lengths = jnp.array([T, 2])
    shapes = jax.eval_shape(rnn.init, key, xs)
    expected = jax.eval_shape(lambda k: cell.init(k, IN), key)
    assert type(shapes["params"]["cell"]["cell"]) is type(expected)
    chex.assert_trees_all_equal_shapes(shapes["params"]["cell"]["cell"], expected)
    variables = _fill(shapes, 7)

    def loss(carry, ys):
        return jnp.sum(ys**2) + sum(jnp.sum(leaf) for leaf in jax.tree.leaves(carry))

    @jax.jit
    def run(variables, xs, lengths):
        params, xs_tm = variables["params"]["cell"]["cell"], _time_major(xs)
        flax = rnn.apply(variables, xs)
        carry, ys = jaxseq.unroll(cell, params, xs_tm)
        flax_final = rnn.apply(variables, xs, seq_lengths=lengths)[0]
        jax_final = jaxseq.unroll(cell, params, xs_tm, lengths=lengths)[0]
        flax_grads = jax.grad(lambda v: loss(*rnn.apply(v, xs)))(variables)
        jax_grads = jax.grad(lambda p: loss(*jaxseq.unroll(cell, p, xs_tm)))(params)
        return (flax, (carry, _time_major(ys)), (flax_final, jax_final)), (flax_grads, jax_grads)

    (flax, ours, finals), (flax_grads, jax_grads) = run(variables, xs, lengths)
    chex.assert_trees_all_close(flax, ours, atol=ATOL)
    chex.assert_trees_all_close(*finals, atol=ATOL)
    chex.assert_trees_all_close(flax_grads["params"]["cell"]["cell"], jax_grads, atol=ATOL)


def test_linen_cell_lstm_initialises_and_applies(key):
    """`nn.RNN(LinenCell(jaxseq.lstm(8)))` with the real `init`; the bare cell API too."""
    cell = jaxseq.lstm(8)
    xs, x_t = _data()
    rnn = nn.RNN(LinenCell(cell))
    variables = jax.jit(rnn.init)(key, xs)
    params = variables["params"]["cell"]["cell"]
    assert isinstance(params, jaxseq.LSTMParams)
    ys = jax.jit(rnn.apply)(variables, xs)
    chex.assert_shape(ys, (B, T, 8))
    chex.assert_tree_all_finite(ys)

    module = LinenCell(cell)
    assert module.num_feature_axes == 1
    carry = module.initialize_carry(key, x_t.shape)
    assert isinstance(carry, jaxseq.LSTMCarry)
    chex.assert_trees_all_equal(carry, cell.initial_carry(params, (B,)))
    chex.assert_trees_all_equal_shapes(
        jax.eval_shape(module.init, key, carry, x_t)["params"], {"cell": params}
    )


def _elman():
    cell = jaxseq.elman(H)
    return cell, _fill(jax.eval_shape(lambda k: cell.init(k, IN), jax.random.key(0)), 8)


def test_from_linen_maps_activations_to_names():
    cell, _ = from_linen(nn.SimpleCell(H, activation_fn=nn.relu), to_linen(*_elman()))
    assert "relu" in cell.name


def test_from_linen_rejects_residual_simple_cell():
    with pytest.raises(ValueError, match="residual"):
        from_linen(nn.SimpleCell(H, residual=True), to_linen(*_elman()))


def test_from_linen_rejects_other_modules():
    with pytest.raises(TypeError, match="MGUCell"):
        from_linen(nn.MGUCell(H), {})


def test_from_linen_names_missing_submodule():
    linen_params = to_linen(*_elman())
    with pytest.raises(ValueError, match=r"\['h'\]\['kernel'\]"):
        from_linen(nn.SimpleCell(H), {"i": linen_params["i"]})
    with pytest.raises(ValueError, match=r'variables\["params"\]'):
        from_linen(nn.SimpleCell(H), {"params": linen_params})


def test_from_linen_rejects_wrong_features():
    with pytest.raises(ValueError, match="features=5"):
        from_linen(nn.SimpleCell(5), to_linen(*_elman()))


@pytest.mark.parametrize(
    "cell, match",
    [
        (jaxseq.lstm(H, peephole=True), "peephole"),
        (jaxseq.lstm(H, forget_gate=False), "forget"),
        (jaxseq.lstm(H, coupled=True), "forget"),
        (jaxseq.gru(H, reset_after=False), "reset_after=False"),
        (jaxseq.gru(H, reset_gate=False), "reset_gate=False"),
    ],
)
def test_to_linen_rejects_unsupported_variants(cell, match, key):
    with pytest.raises(ValueError, match=match):
        to_linen(cell, _fill(jax.eval_shape(lambda k: cell.init(k, IN), key), 9))


def test_to_linen_rejects_params_of_another_size():
    _, params = _elman()
    with pytest.raises(ValueError, match="hidden_size=5"):
        to_linen(jaxseq.elman(5), params)
    with pytest.raises(TypeError, match="params must be"):
        to_linen(jaxseq.elman(H), {"w": params.w_x})


def test_carry_helpers_swap_lstm_order():
    h, c = _fill((jax.ShapeDtypeStruct((B, H), jnp.float32),) * 2, 10)
    carry = carry_from_linen((c, h))
    assert isinstance(carry, jaxseq.LSTMCarry)
    assert carry.h is h and carry.c is c
    c_out, h_out = carry_to_linen(carry)
    assert c_out is c and h_out is h
    assert carry_from_linen(h) is h and carry_to_linen(h) is h
    with pytest.raises(TypeError, match="already"):
        carry_from_linen(carry)
    with pytest.raises(TypeError, match="LSTMCarry"):
        carry_to_linen((h, c))
