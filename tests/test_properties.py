"""Property tests of `unroll` with lengths: padding never leaks into a sequence.

For random T, batch shapes of rank 0 to 2, hidden sizes and lengths in [0, T],
a batched `unroll(..., lengths=...)` must give every example exactly what that
example alone gives when cut to its own length: the same final carry, the same
outputs at valid steps, and zeros after. With `reverse=True` each example is
read from its own last valid step back to step 0.

The per-example reference is the definition of `unroll` (a Python loop over a
jitted `cell.step`, which test_cells.py checks against `unroll` itself), so it
costs one compilation per cell and hidden size while every new shape of the
batched `unroll` costs one. Hence the modest `max_examples`.
"""

import functools

import hypothesis.extra.numpy as hnp
import jax
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxseq

IN = 2
FAMILIES = {"elman": jaxseq.elman, "lstm": jaxseq.lstm, "gru": jaxseq.gru}
SETTINGS = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,  # reproducible, like every other test here
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@functools.cache
def _cell_and_params(family: str, hidden_size: int):
    """The cell, and params of `init`'s structure with N(0, 0.5²) entries (biases too).

    The entries are cut from one fixed-size draw: `jax.random` and `init`
    compile once per shape, which would cost more than the property itself.
    """
    cell = FAMILIES[family](hidden_size)
    leaves, tree = jax.tree.flatten(jax.eval_shape(lambda k: cell.init(k, IN), jax.random.key(0)))
    pool = 0.5 * np.asarray(jax.random.normal(jax.random.key(0), (1024,)))
    starts = np.cumsum([0] + [leaf.size for leaf in leaves])
    return cell, jax.tree.unflatten(
        tree, [pool[i : i + a.size].reshape(a.shape) for i, a in zip(starts, leaves)]
    )


@functools.cache
def _unroll(family: str, hidden_size: int, reverse: bool):
    cell, _ = _cell_and_params(family, hidden_size)
    return jax.jit(functools.partial(jaxseq.unroll, cell, reverse=reverse))


@functools.cache
def _step(family: str, hidden_size: int):
    cell, _ = _cell_and_params(family, hidden_size)
    return jax.jit(cell.step)


_FLOATS = st.floats(-2.0, 2.0, width=32)


@st.composite
def problems(draw):
    """`(family, hidden_size, xs [T, *batch, IN], two carries [*batch, H], lengths [*batch])`."""
    family = draw(st.sampled_from(sorted(FAMILIES)))
    num_steps = draw(st.integers(1, 6))
    batch_shape = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    hidden_size = draw(st.integers(1, 4))
    xs = draw(hnp.arrays(np.float32, (num_steps, *batch_shape, IN), elements=_FLOATS))
    carry_shape = (*batch_shape, hidden_size)
    carries = [draw(hnp.arrays(np.float32, carry_shape, elements=_FLOATS)) for _ in range(2)]
    lengths = draw(hnp.arrays(np.int32, batch_shape, elements=st.integers(0, num_steps)))
    return family, hidden_size, xs, carries, lengths


def _check_each_example(problem, reverse):
    family, hidden_size, xs, carries, lengths = problem
    cell, params = _cell_and_params(family, hidden_size)
    leaves, tree = jax.tree.flatten(
        jax.eval_shape(lambda p: cell.initial_carry(p, lengths.shape), params)
    )
    carry0 = jax.tree.unflatten(tree, carries[: len(leaves)])  # an array, or LSTMCarry(h, c)

    final, ys = _unroll(family, hidden_size, reverse)(params, xs, carry0, lengths=lengths)
    final, ys = jax.tree.map(np.asarray, final), np.asarray(ys)

    step = _step(family, hidden_size)
    for index in np.ndindex(*lengths.shape):
        length = int(lengths[index])
        x_e = xs[(slice(None), *index)][:length]  # the example alone, cut to its length
        if reverse:
            x_e = x_e[::-1]
        carry, ys_e = jax.tree.map(lambda a: a[index], carry0), np.zeros((length, hidden_size))
        for t, x_t in enumerate(x_e):
            carry, ys_e[t] = step(params, carry, x_t)
        if reverse:
            ys_e = ys_e[::-1]

        for actual, expected in zip(jax.tree.leaves(final), jax.tree.leaves(carry)):
            np.testing.assert_allclose(actual[index], expected, rtol=1e-5, atol=1e-6)
        example_ys = ys[(slice(None), *index)]
        np.testing.assert_allclose(example_ys[:length], ys_e, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(example_ys[length:], 0.0)


@SETTINGS
@given(problem=problems())
def test_lengths_equal_unrolling_each_example_cut_to_its_length(problem):
    _check_each_example(problem, reverse=False)


@SETTINGS
@given(problem=problems())
def test_reverse_with_lengths_equals_unrolling_each_example_reversed(problem):
    _check_each_example(problem, reverse=True)
