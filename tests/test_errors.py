"""Bad input fails fast, naming the argument, the expected and the actual value.

Each error has one test that matches its whole message. Shape and dtype errors
are raised while tracing, so they must come out of `jax.jit` unchanged; value
errors (NaN in the data, lengths out of range) need concrete arrays.
"""

import functools
import re

import jax
import jax.numpy as jnp
import pytest

import jaxseq

T, IN, H, B = 4, 3, 2, 2
CELL = jaxseq.lstm(H)
NAME = re.escape(CELL.name)  # "lstm(hidden_size=2, ...)"


def _zeros_like_init(init, key):
    """Zero params with the structure `init` gives (the checks only read shapes and dtypes)."""
    shapes = jax.eval_shape(lambda k: init(k, IN), key)
    return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)


@pytest.fixture
def params(key):
    return _zeros_like_init(CELL.init, key)


def _xs(shape=(T, B, IN), dtype=jnp.float32):
    return jnp.ones(shape, dtype)


def _carry(batch_shape=(B,)):
    return jaxseq.LSTMCarry(h=jnp.zeros((*batch_shape, H)), c=jnp.zeros((*batch_shape, H)))


# --- xs ----------------------------------------------------------------------------------------


def test_xs_of_rank_one(params):
    with pytest.raises(
        ValueError,
        match=r"xs must have shape \[time, \*batch, features\] \(rank >= 2\), got shape \(3,\)",
    ):
        jaxseq.unroll(CELL, params, _xs((3,)))


def test_xs_with_the_wrong_feature_size(params):
    with pytest.raises(
        ValueError,
        match=rf"xs has 5 features but the cell {NAME} was initialised for 3 \(shape \(4, 2, 5\)\)",
    ):
        jaxseq.unroll(CELL, params, _xs((T, B, 5)))


def test_xs_of_integer_dtype(params):
    with pytest.raises(TypeError, match=r"xs must have a floating dtype, got int32"):
        jaxseq.unroll(CELL, params, _xs(dtype=jnp.int32))


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_xs_with_nan_or_inf(params, bad):
    xs = _xs().at[1, 0, 2].set(bad)
    with pytest.raises(ValueError, match=r"xs contains NaN or Inf values"):
        jaxseq.unroll(CELL, params, xs)


def test_step_with_the_wrong_feature_size(params):
    with pytest.raises(
        ValueError,
        match=rf"x_t has 5 features but the cell {NAME} was initialised for 3 \(shape \(2, 5\)\)",
    ):
        CELL.step(params, _carry(), _xs((B, 5)))


def test_step_with_x_t_of_rank_zero(params):
    with pytest.raises(
        ValueError, match=r"x_t must have shape \[\*batch, features\] \(rank >= 1\), got shape \(\)"
    ):
        CELL.step(params, _carry(()), jnp.float32(1.0))


# --- lengths -----------------------------------------------------------------------------------


def test_lengths_with_the_wrong_shape(params):
    with pytest.raises(
        ValueError, match=r"lengths must have the batch shape of xs \(2,\), got \(3,\)"
    ):
        jaxseq.unroll(CELL, params, _xs(), lengths=jnp.array([1, 2, 3]))


def test_lengths_of_float_dtype(params):
    with pytest.raises(TypeError, match=r"lengths must have an integer dtype, got float32"):
        jaxseq.unroll(CELL, params, _xs(), lengths=jnp.array([1.0, 2.0]))


@pytest.mark.parametrize(("lengths", "low", "high"), [([-1, 2], -1, 2), ([2, 5], 2, 5)])
def test_lengths_out_of_range(params, lengths, low, high):
    message = (
        rf"lengths must lie in \[0, 4\] \(the number of time steps\), "
        rf"got values in \[{low}, {high}\]"
    )
    with pytest.raises(ValueError, match=message):
        jaxseq.unroll(CELL, params, _xs(), lengths=jnp.array(lengths))


# --- carry -------------------------------------------------------------------------------------


def test_carry_with_the_wrong_shape(params):
    with pytest.raises(
        ValueError,
        match=r"carry leaves must have shape \(2, 2\) \(batch \(2,\), hidden 2\), got \(3, 2\)",
    ):
        jaxseq.unroll(CELL, params, _xs(), _carry((3,)))


def test_carry_with_the_wrong_structure(params):
    with pytest.raises(ValueError, match=r"carry must have the structure .*LSTMCarry.*, got"):
        jaxseq.unroll(CELL, params, _xs(), jnp.zeros((B, H)))


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.float16])
def test_carry_of_the_wrong_dtype(params, dtype):
    carry = jax.tree.map(lambda a: a.astype(dtype), _carry())
    with pytest.raises(
        TypeError, match=r"carry leaves must have dtype float32 .*, got " + jnp.dtype(dtype).name
    ):
        jaxseq.unroll(CELL, params, _xs(), carry)


# --- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize("argument", ["unroll", "truncate"])
@pytest.mark.parametrize("value", [0, -2, 1.5, True])
def test_unroll_and_truncate_must_be_positive_ints(params, argument, value):
    with pytest.raises(ValueError, match=rf"{argument} must be a positive int, got {value!r}"):
        jaxseq.unroll(CELL, params, _xs(), **{argument: value})


@pytest.mark.parametrize(
    ("factory", "argument"),
    [(jaxseq.elman, "activation"), (jaxseq.lstm, "gate_activation"), (jaxseq.gru, "activation")],
)
def test_unknown_activation(factory, argument):
    with pytest.raises(ValueError, match=rf"{argument} must be one of \('tanh', .*\), got 'swish'"):
        factory(H, **{argument: "swish"})


def test_init_with_a_non_positive_input_size(key):
    with pytest.raises(ValueError, match=r"input_size must be a positive int, got 0"):
        CELL.init(key, 0)


# --- rnn layers --------------------------------------------------------------------------------


@pytest.mark.parametrize("num_layers", [0, -1, 2.0])
def test_rnn_with_a_non_positive_number_of_layers(num_layers):
    with pytest.raises(ValueError, match=rf"num_layers must be a positive int, got {num_layers!r}"):
        jaxseq.rnn(CELL, num_layers=num_layers)


def test_rnn_apply_with_a_stacked_carry_of_the_wrong_shape(key):
    layer = jaxseq.rnn(CELL, num_layers=2, bidirectional=True)
    params = _zeros_like_init(layer.init, key)
    carry = jaxseq.LSTMCarry(h=jnp.zeros((2, B, H)), c=jnp.zeros((2, B, H)))  # needs 2 * 2
    with pytest.raises(
        ValueError,
        match=r"carry leaves must have shape \(4, 2, 2\) \(\[layers\*directions, \*batch, "
        r"hidden\]\), got \(2, 2, 2\)",
    ):
        layer.apply(params, _xs(), carry)


def test_rnn_apply_with_params_of_another_depth(key):
    params = _zeros_like_init(jaxseq.rnn(CELL, num_layers=1).init, key)
    with pytest.raises(
        ValueError,
        match=r"params must be \[num_layers=2\]\[num_directions=1\] cell params, got 1 layers",
    ):
        jaxseq.rnn(CELL, num_layers=2).apply(params, _xs())


# --- the same shape and dtype errors at trace time, under jit ----------------------------------


def _unroll_call(params, xs, carry=None, lengths=None):
    return jaxseq.unroll(CELL, params, xs, carry, lengths=lengths)


TRACE_TIME_ERRORS = {
    "xs_rank": (dict(xs=_xs((3,))), ValueError, r"xs must have shape"),
    "xs_features": (dict(xs=_xs((T, B, 5))), ValueError, r"xs has 5 features"),
    "xs_dtype": (dict(xs=_xs(dtype=jnp.int32)), TypeError, r"xs must have a floating dtype"),
    "lengths_shape": (
        dict(lengths=jnp.array([1, 2, 3])),
        ValueError,
        r"lengths must have the batch shape of xs \(2,\), got \(3,\)",
    ),
    "lengths_dtype": (
        dict(lengths=jnp.array([1.0, 2.0])),
        TypeError,
        r"lengths must have an integer dtype, got float32",
    ),
    "carry_shape": (dict(carry=_carry((3,))), ValueError, r"carry leaves must have shape \(2, 2\)"),
}


@pytest.mark.parametrize("case", TRACE_TIME_ERRORS)
def test_shape_and_dtype_errors_are_raised_at_trace_time_under_jit(params, case):
    arguments, error, message = TRACE_TIME_ERRORS[case]
    arguments = dict(xs=_xs()) | arguments
    with pytest.raises(error, match=message):
        jax.jit(_unroll_call)(params, **arguments)


def test_step_feature_error_is_raised_at_trace_time_under_jit(params):
    with pytest.raises(ValueError, match=r"x_t has 5 features"):
        jax.jit(CELL.step)(params, _carry(), _xs((B, 5)))


def test_layer_carry_error_is_raised_at_trace_time_under_jit(key):
    layer = jaxseq.rnn(CELL, num_layers=2)
    params = _zeros_like_init(layer.init, key)
    carry = jaxseq.LSTMCarry(h=jnp.zeros((1, B, H)), c=jnp.zeros((1, B, H)))
    with pytest.raises(ValueError, match=r"carry leaves must have shape \(2, 2, 2\)"):
        jax.jit(layer.apply)(params, _xs(), carry)


def test_value_checks_are_skipped_on_traced_arrays(params):
    """NaN and range checks need concrete values; under jit only shapes are checked."""
    run = jax.jit(functools.partial(_unroll_call, params))
    _, ys = run(_xs().at[0, 0, 0].set(jnp.nan), lengths=jnp.array([T, T]))
    assert jnp.isnan(ys[:, 0]).any()
