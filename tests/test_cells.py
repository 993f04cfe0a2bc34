"""Every cell in `ALL_CELLS` through shapes, the NumPy reference, unroll, vmap, lengths, jit.

Compilation dominates the runtime, so each jitted function is built once per cell
variant (`_step`, `_unroll`), `init` runs eagerly, and indexing happens in NumPy.
"""

import functools

import cells_list
import chex
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference
import pytest

import jaxseq
from jaxseq.cells import ACTIVATIONS

DIMS = chex.Dimensions(T=7, I=3, H=5, B=2)
T, H, B = DIMS["THB"]
IN = DIMS.I  # `I` is an ambiguous name for ruff (E741)
ATOL = RTOL = 1e-5

cells = pytest.mark.parametrize("name", cells_list.CELL_NAMES)


def _identity(f):
    return f


def _setup(name: str, key: jax.Array, batch_shape: tuple[int, ...] = (B,)):
    """The cell, its NumPy step, noisy params, a non-zero carry and inputs `[T, *batch, I]`.

    Not jitted: compiling `init` (orthogonal's QR) costs seconds, while eager ops are
    compiled once per shape and shared by every cell.
    """
    cell, reference_step = cells_list.build(name, H)
    k_params, k_carry, k_xs = jax.random.split(key, 3)
    params = cells_list.random_params(cell, k_params, IN)
    carry = cells_list.random_carry(cell, params, k_carry, batch_shape)
    xs = jnp.asarray(cells_list.normal(k_xs, (T, *batch_shape, IN)))
    return cell, reference_step, params, carry, xs


@functools.cache
def _step(name: str):
    """`cell.step`, jitted once per cell variant (the Python-loop reference)."""
    cell, _ = cells_list.build(name, H)
    return jax.jit(cell.step)


@functools.cache
def _unroll(name: str, *, reverse: bool = False, transform=jax.jit):
    """`(params, xs, carry=None, lengths=None) -> (carry, ys)`, jitted once per cell variant."""
    cell, _ = cells_list.build(name, H)

    def run(params, xs, carry=None, lengths=None):
        return jaxseq.unroll(cell, params, xs, carry, lengths=lengths, reverse=reverse)

    return transform(run)


def _numpy(tree):
    return jax.tree.map(np.asarray, tree)


def _row(tree, index):
    return jax.tree.map(lambda leaf: np.asarray(leaf)[index], tree)


def _loop(name, params, xs, carry, *, reverse: bool = False):
    """`for t in range(T): carry, ys[t] = cell.step(params, carry, xs[t])` (reverse: t = T-1..0)."""
    xs = np.asarray(xs)
    ys = np.zeros((*xs.shape[:-1], H), np.float32)
    for t in reversed(range(len(xs))) if reverse else range(len(xs)):
        carry, ys[t] = _step(name)(params, carry, xs[t])
    return _numpy(carry), ys


def _assert_matches_reference(actual, expected):
    """Leaves of a JAX tree equal the leaves of a float64 NumPy tree (tuples for carries)."""
    actual_leaves, expected_leaves = jax.tree.leaves(actual), jax.tree.leaves(expected)
    assert len(actual_leaves) == len(expected_leaves)
    for got, want in zip(actual_leaves, expected_leaves, strict=True):
        chex.assert_shape(got, want.shape)
        np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=ATOL, rtol=RTOL)


# The cells without a recurrent weight: the parallel-scan family (fused w_x and b only, or LRU).
_PARALLEL_FAMILY_SHAPES = {
    "mingru": {"w_x": (IN, 2 * H), "b": (2 * H,)},
    "minlstm": {"w_x": (IN, 3 * H), "b": (3 * H,)},
    "lru": {
        **dict.fromkeys(("nu_log", "theta_log", "gamma_log"), (H,)),
        **dict.fromkeys(("b_re", "b_im", "d"), (IN, H)),
        **dict.fromkeys(("c_re", "c_im"), (H, H)),
    },
}


def _expected_param_shapes(name: str) -> dict[str, tuple[int, ...] | None]:
    options = cells_list.FACTORIES[name].keywords
    kind = cells_list.family(name)
    if kind in _PARALLEL_FAMILY_SHAPES:
        return _PARALLEL_FAMILY_SHAPES[kind]
    if kind == "lstm":
        gates = numpy_reference.lstm_gates(
            forget_gate=options.get("forget_gate", True), coupled=options.get("coupled", False)
        )
    elif kind == "gru":
        gates = numpy_reference.gru_gates(reset_gate=options.get("reset_gate", True))
    else:
        gates = ("h",)
    k = len(gates)
    shapes = {"w_x": (IN, k * H), "w_h": (H, k * H), "b": (k * H,)}
    if kind == "lstm":
        shapes["w_peep"] = (3, H) if options.get("peephole", False) else None
    if kind == "gru":
        has_b_hn = options.get("reset_gate", True) and options.get("reset_after", True)
        shapes["b_hn"] = (H,) if has_b_hn else None
    return shapes


# --- shapes --------------------------------------------------------------------------------


@cells
def test_param_carry_and_output_shapes(name, key):
    cell, _ = cells_list.build(name, H)
    params = cell.init(key, IN)
    expected = _expected_param_shapes(name)
    assert set(params._fields) == set(expected)
    for field, shape in expected.items():
        leaf = getattr(params, field)
        if shape is None:
            assert leaf is None, field
        else:
            chex.assert_shape(leaf, shape)
            assert leaf.dtype == jnp.float32
    assert cell.hidden_size == H
    assert cell.input_size(params) == IN

    carry = cell.initial_carry(params, (B,))
    two_leaves = cells_list.family(name) in ("lstm", "lru")  # (h, c) and (re, im)
    assert len(jax.tree.leaves(carry)) == (2 if two_leaves else 1)
    chex.assert_tree_shape_suffix(carry, DIMS["BH"])
    chex.assert_trees_all_equal(_numpy(carry), jax.tree.map(np.zeros_like, _numpy(carry)))

    final, ys = _unroll(name)(params, np.ones(DIMS["TBI"], np.float32), carry)
    chex.assert_shape(ys, DIMS["TBH"])
    chex.assert_trees_all_equal_shapes_and_dtypes(final, carry)
    step_carry, y_t = _step(name)(params, carry, np.ones(DIMS["BI"], np.float32))
    chex.assert_shape(y_t, DIMS["BH"])
    chex.assert_trees_all_equal_shapes_and_dtypes(step_carry, carry)


# --- one step against the NumPy reference ----------------------------------------------------


@cells
def test_step_matches_numpy_reference(name, key):
    _, reference_step, params, carry, xs = _setup(name, key)
    x_0 = np.asarray(xs)[0]
    new_carry, y_t = _step(name)(params, carry, x_0)
    expected_carry, expected_y = reference_step(_numpy(params), _numpy(carry), x_0)
    _assert_matches_reference(new_carry, expected_carry)
    _assert_matches_reference(y_t, expected_y)


@cells
def test_every_param_leaf_changes_the_step(name, key):
    """Guards the reference test: zeroing any one leaf (b_hn, peepholes, ...) changes y_t."""
    _, _, params, carry, xs = _setup(name, key)
    x_0 = np.asarray(xs)[0]
    _, y_t = _step(name)(params, carry, x_0)
    for field, leaf in params._asdict().items():
        if leaf is not None:
            zeroed = params._replace(**{field: np.zeros_like(leaf)})
            assert not np.allclose(_step(name)(zeroed, carry, x_0)[1], y_t, atol=1e-3), field


# --- unroll --------------------------------------------------------------------------------


@cells
@pytest.mark.parametrize("transform", [jax.jit, _identity], ids=["jit", "no_jit"])
def test_unroll_equals_python_loop_over_step(name, transform, key):
    _, _, params, carry, xs = _setup(name, key)
    final, ys = _unroll(name, transform=transform)(params, xs, carry)
    chex.assert_trees_all_close((final, ys), _loop(name, params, xs, carry), atol=ATOL, rtol=RTOL)
    chex.assert_tree_all_finite((final, ys))


def test_jit_closing_over_concrete_inputs(key):
    """Data captured by a jitted closure (not passed as an argument) is a common pattern."""
    cell, _, params, carry, xs = _setup("lstm", key)
    lengths = jnp.array([3, T])
    expected = _unroll("lstm")(params, xs, carry, lengths)
    closed = jax.jit(lambda p: jaxseq.unroll(cell, p, xs, carry, lengths=lengths))
    chex.assert_trees_all_close(closed(params), expected, atol=ATOL, rtol=RTOL)


@cells
def test_unroll_matches_numpy_unroll(name, key):
    _, reference_step, params, carry, xs = _setup(name, key)
    final, ys = _unroll(name)(params, xs, carry)
    expected_final, expected_ys = numpy_reference.unroll(
        reference_step, _numpy(params), np.asarray(xs), _numpy(carry)
    )
    _assert_matches_reference(final, expected_final)
    _assert_matches_reference(ys, expected_ys)


@cells
def test_batched_rows_equal_per_example_unrolls(name, key):
    _, _, params, carry, xs = _setup(name, key)
    final, ys = _numpy(_unroll(name)(params, xs, carry))
    for b in range(B):
        final_b, ys_b = _unroll(name)(params, np.asarray(xs)[:, b], _row(carry, b))
        chex.assert_trees_all_close(_row(final, b), final_b, atol=ATOL, rtol=RTOL)
        chex.assert_trees_all_close(ys[:, b], ys_b, atol=ATOL, rtol=RTOL)


@cells
def test_vmap_over_examples_equals_batched_unroll(name, key):
    cell, _, params, carry, xs = _setup(name, key)
    per_example = jax.vmap(
        lambda p, x, c: jaxseq.unroll(cell, p, x, c), in_axes=(None, 1, 0), out_axes=(0, 1)
    )
    chex.assert_trees_all_close(
        jax.jit(per_example)(params, xs, carry),
        _unroll(name)(params, xs, carry),
        atol=ATOL,
        rtol=RTOL,
    )


@cells
def test_vmap_over_parameter_sets(name, key):
    cell, _, _, carry, xs = _setup(name, key)
    keys = jax.random.split(key, 3)

    stacked = jax.vmap(lambda k: cell.init(k, IN))(keys)
    run_sets = jax.jit(jax.vmap(lambda p, x, c: jaxseq.unroll(cell, p, x, c), (0, None, None)))
    final, ys = _numpy(run_sets(stacked, xs, carry))
    for j, key_j in enumerate(keys):
        params_j = cell.init(key_j, IN)
        chex.assert_trees_all_close(_row(stacked, j), params_j, atol=1e-6)
        final_j, ys_j = _unroll(name)(params_j, xs, carry)
        chex.assert_trees_all_close(_row(final, j), final_j, atol=ATOL, rtol=RTOL)
        chex.assert_trees_all_close(ys[j], ys_j, atol=ATOL, rtol=RTOL)


@cells
def test_arbitrary_leading_batch_shape(name, key):
    batch_shape = (2, 3)
    _, reference_step, params, carry, xs = _setup(name, key, batch_shape)
    final, ys = _unroll(name)(params, xs, carry)
    chex.assert_shape(ys, (T, *batch_shape, H))
    chex.assert_tree_shape_prefix(final, batch_shape)
    expected = numpy_reference.unroll(reference_step, _numpy(params), np.asarray(xs), _numpy(carry))
    _assert_matches_reference((final, ys), expected)


# --- reverse and lengths ---------------------------------------------------------------------


@cells
def test_reverse_equals_unrolling_flipped_input(name, key):
    _, _, params, carry, xs = _setup(name, key)
    final, ys = _unroll(name, reverse=True)(params, xs, carry)
    flipped_final, flipped_ys = _unroll(name)(params, np.asarray(xs)[::-1], carry)
    chex.assert_trees_all_close(final, flipped_final, atol=ATOL, rtol=RTOL)
    chex.assert_trees_all_close(ys, np.asarray(flipped_ys)[::-1], atol=ATOL, rtol=RTOL)
    chex.assert_trees_all_close(
        (final, ys), _loop(name, params, xs, carry, reverse=True), atol=ATOL, rtol=RTOL
    )


LENGTHS = pytest.mark.parametrize("lengths", [(0, T), (4, 2)], ids=str)
REVERSE = pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])


@cells
@LENGTHS
@REVERSE
def test_lengths_keep_last_valid_carry_and_zero_outputs(name, lengths, reverse, key):
    _, _, params, carry, xs = _setup(name, key)
    final, ys = _numpy(_unroll(name, reverse=reverse)(params, xs, carry, np.array(lengths)))
    chex.assert_tree_all_finite((final, ys))
    for b, length in enumerate(lengths):
        # Every example cut to this length, with no masking involved; row b is the reference.
        cut_final, cut_ys = _loop(name, params, np.asarray(xs)[:length], carry, reverse=reverse)
        chex.assert_trees_all_close(_row(final, b), _row(cut_final, b), atol=ATOL, rtol=RTOL)
        chex.assert_trees_all_close(ys[:length, b], cut_ys[:, b], atol=ATOL, rtol=RTOL)
        chex.assert_trees_all_equal(ys[length:, b], np.zeros((T - length, H), np.float32))


@cells
@LENGTHS
@REVERSE
def test_lengths_match_numpy_unroll(name, lengths, reverse, key):
    _, reference_step, params, carry, xs = _setup(name, key)
    final, ys = _unroll(name, reverse=reverse)(params, xs, carry, np.array(lengths))
    expected = numpy_reference.unroll(
        reference_step,
        _numpy(params),
        np.asarray(xs),
        _numpy(carry),
        lengths=np.array(lengths),
        reverse=reverse,
    )
    _assert_matches_reference((final, ys), expected)


@cells
def test_full_lengths_equal_no_lengths(name, key):
    _, _, params, carry, xs = _setup(name, key)
    for reverse in (False, True):
        run = _unroll(name, reverse=reverse)
        chex.assert_trees_all_close(
            run(params, xs, carry, np.full((B,), T)), run(params, xs, carry), atol=ATOL, rtol=RTOL
        )


# --- known values (hard-coded, from numpy_reference with these weights; rlax style) ---------

XS_KNOWN = np.array([[1.0, -1.0], [0.5, 0.25], [-0.3, 0.8]], np.float32)  # [T=3, I=2], no batch
ELMAN_WEIGHTS = {
    "w_x": [[0.1, -0.2], [0.3, 0.4]],
    "w_h": [[0.5, -0.1], [0.2, 0.3]],
    "b": [0.05, -0.05],
}
LSTM_WEIGHTS = {  # gate blocks (i, f, g, o), two columns each
    "w_x": [
        [0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8],
        [-0.3, 0.2, -0.1, 0.4, 0.2, 0.1, -0.5, 0.3],
    ],
    "w_h": [
        [0.2, 0.1, -0.3, 0.2, 0.4, -0.2, 0.1, 0.3],
        [-0.1, 0.3, 0.2, -0.4, 0.1, 0.2, -0.3, 0.1],
    ],
    "b": [0.1, -0.1, 1.0, 0.5, 0.0, 0.2, -0.2, 0.3],
}
PEEPHOLES = [[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]]  # rows (i, f, o)
GRU_WEIGHTS = {  # gate blocks (r, z, n), two columns each
    "w_x": [[0.1, -0.2, 0.3, -0.4, 0.5, -0.6], [-0.3, 0.2, -0.1, 0.4, 0.2, 0.1]],
    "w_h": [[0.2, 0.1, -0.3, 0.2, 0.4, -0.2], [-0.1, 0.3, 0.2, -0.4, 0.1, 0.2]],
    "b": [0.1, -0.1, 0.5, -0.5, 0.2, -0.2],
}
MINGRU_WEIGHTS = {  # gate blocks (z, h̃), two columns each
    "w_x": [[0.1, -0.2, 0.3, -0.4], [-0.3, 0.2, 0.5, 0.1]],
    "b": [0.1, -0.1, 0.25, -0.2],
}
MINLSTM_WEIGHTS = {  # gate blocks (f, i, h̃), two columns each
    "w_x": [[0.1, -0.2, 0.3, -0.4, 0.5, -0.6], [-0.3, 0.2, -0.1, 0.4, 0.2, 0.1]],
    "b": [1.0, 0.5, -0.5, 0.2, 0.1, -0.1],
}

# name in ALL_CELLS: (params type, weights, expected ys [3, 2], expected final C_T or None)
KNOWN = {
    "elman_tanh": (
        jaxseq.ElmanParams,
        ELMAN_WEIGHTS,
        [[-0.14888503, -0.57166997], [-0.01377564, -0.20372183], [0.20923177, 0.26386769]],
        None,
    ),
    "elman_relu": (
        jaxseq.ElmanParams,
        ELMAN_WEIGHTS,
        [[0.0, 0.0], [0.175, 0.0], [0.3475, 0.3125]],
        None,
    ),
    "lstm": (
        jaxseq.LSTMParams,
        LSTM_WEIGHTS,
        [[0.13112898, -0.05354733], [0.15474137, -0.07866199], [0.07516575, 0.06300991]],
        [0.24228919, 0.09105236],
    ),
    "lstm_peephole": (
        jaxseq.LSTMParams,
        {**LSTM_WEIGHTS, "w_peep": PEEPHOLES},
        [[0.12786545, -0.05226676], [0.14477056, -0.07624402], [0.07027406, 0.06880964]],
        [0.24742047, 0.09896832],
    ),
    "gru": (
        jaxseq.GRUParams,
        {**GRU_WEIGHTS, "b_hn": [0.3, -0.3]},
        [[0.17224005, -0.60282024], [0.33200034, -0.59136432], [0.3516671, -0.40944719]],
        None,
    ),
    "gru_reset_before": (
        jaxseq.GRUParams,
        GRU_WEIGHTS,
        [[0.13357519, -0.56289192], [0.26124465, -0.52065827], [0.24696636, -0.29402322]],
        None,
    ),
    "mingru": (
        jaxseq.cells.MinGRUParams,
        MINGRU_WEIGHTS,
        [[0.03112297, -0.26427847], [0.28731734, -0.31549494], [0.41209749, -0.14829396]],
        None,
    ),
    "minlstm": (
        jaxseq.cells.MinLSTMParams,
        MINLSTM_WEIGHTS,
        [[0.14876889, -0.32237869], [0.23905516, -0.34670472], [0.19594386, -0.09676005]],
        None,
    ),
}


@pytest.mark.parametrize("name", list(KNOWN))
def test_known_values(name):
    params_type, weights, expected_ys, expected_c = KNOWN[name]
    params = params_type(**{field: jnp.array(value) for field, value in weights.items()})
    cell = cells_list.FACTORIES[name](2)
    final, ys = jaxseq.unroll(cell, params, jnp.asarray(XS_KNOWN))
    np.testing.assert_allclose(ys, expected_ys, atol=1e-6)
    np.testing.assert_allclose(jax.tree.leaves(final)[0], expected_ys[-1], atol=1e-6)
    if expected_c is not None:
        np.testing.assert_allclose(final.c, expected_c, atol=1e-6)

    # The pasted numbers still come out of the float64 reference, so neither drifts silently.
    zeros = _numpy(cell.initial_carry(params, ()))
    reference_final, reference_ys = numpy_reference.unroll(
        cells_list.reference_step(name), _numpy(params), XS_KNOWN, zeros
    )
    np.testing.assert_allclose(reference_ys, expected_ys, atol=1e-8)
    if expected_c is not None:
        np.testing.assert_allclose(reference_final[1], expected_c, atol=1e-8)


# --- option errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory, argument",
    [
        (jaxseq.elman, "activation"),
        (jaxseq.lstm, "activation"),
        (jaxseq.lstm, "gate_activation"),
        (jaxseq.gru, "activation"),
        (jaxseq.gru, "gate_activation"),
    ],
)
def test_unknown_activation_names_argument_and_choices(factory, argument):
    with pytest.raises(ValueError, match=rf"^{argument} must be one of .*'swishy'") as info:
        factory(4, **{argument: "swishy"})
    for allowed in ACTIVATIONS:
        assert repr(allowed) in str(info.value)


@pytest.mark.parametrize("factory", [jaxseq.elman, jaxseq.lstm, jaxseq.gru])
@pytest.mark.parametrize("hidden_size", [0, -3, 2.5, "4", True, None])
def test_bad_hidden_size(factory, hidden_size):
    with pytest.raises(ValueError, match=r"hidden_size must be a positive int, got"):
        factory(hidden_size)


def test_coupled_needs_forget_gate():
    with pytest.raises(ValueError, match="coupled=True needs forget_gate=True"):
        jaxseq.lstm(4, coupled=True, forget_gate=False)


@cells
@pytest.mark.parametrize("input_size", [0, -1, 2.0])
def test_init_rejects_bad_input_size(name, input_size, key):
    cell, _ = cells_list.build(name, H)
    with pytest.raises(ValueError, match=r"input_size must be a positive int"):
        cell.init(key, input_size)
