"""Mixed precision: `compute_dtype=jnp.bfloat16` against a float64 NumPy reference.

With bfloat16 compute every matrix product takes bfloat16 operands (8
significant bits, unit roundoff 2⁻⁹ ≈ 2e-3) and accumulates in float32, while
params, carries and gate nonlinearities stay float32. The documented bounds,
checked here over T = 40 steps against float64 NumPy (measured: relative
2-4e-3 forward, 3e-3 gradients for the gated cells; the tanh Elman cell, the
most sensitive, 4e-3 / 9e-3 and max |Δy| 1.9e-2):

    forward:   ‖y_bf16 − y_ref‖ / ‖y_ref‖ ≤ 1e-2   and   max |Δy| ≤ 5e-2 · max(1, max |y_ref|)
    gradients: per leaf, ‖g_bf16 − g_f32‖ / ‖g_f32‖ ≤ 2e-2   (fused and autodiff BPTT)

`compute_dtype=None` (the default) is the float32 path: no bfloat16 anywhere in
the program and the reference matched to 1e-5.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference
import pytest
from cells_list import FACTORIES, normal, reference_step

import jaxseq
import jaxseq.cells.registry
from jaxseq import models, training

T, B, IN, H = 40, 3, 6, 16
BF16 = jnp.bfloat16
REL_FORWARD, ABS_FORWARD, REL_GRAD = 1e-2, 5e-2, 2e-2
ROOT = jax.random.key(0)
STEPS = 20  # Adam steps of the training test
CELLS = ["elman_tanh", "lstm", "gru", "gru_reset_before", "mingru", "lru"]
# (cell, the `bptt` modes whose bfloat16 gradients are checked); mingru has no
# RecurrentMatmul, so only autodiff applies to it
GRAD_CASES = [
    pytest.param("lstm", ("fused", "autodiff"), id="lstm"),
    pytest.param("gru", ("fused",), id="gru"),
    pytest.param("elman_tanh", ("fused", "autodiff"), id="elman_tanh", marks=pytest.mark.slow),
    pytest.param("mingru", ("autodiff",), id="mingru", marks=pytest.mark.slow),
]


def _key(i: int) -> jax.Array:
    return jax.random.fold_in(ROOT, i)


@functools.cache
def _cells(name: str):
    """`(float32 cell, bfloat16-compute cell)`, cached so the jitted closures are reused."""
    return FACTORIES[name](H), FACTORIES[name](H, compute_dtype=BF16)


def _params(init, *args, scale: float = 0.3):
    """Params shaped like `init(key, *args)` with N(0, scale²) entries (no initialiser compiles)."""
    shapes = jax.eval_shape(lambda k: init(k, *args), ROOT)
    leaves, treedef = jax.tree.flatten(shapes)
    return jax.tree.unflatten(
        treedef, [jnp.asarray(normal(_key(100 + i), s.shape, scale)) for i, s in enumerate(leaves)]
    )


@functools.cache
def _setup(name: str):
    """Params, inputs `[T, B, IN]` and the float64 NumPy reference outputs `[T, B, H]`."""
    cell, _ = _cells(name)
    params = _params(cell.init, IN)
    xs = normal(_key(2), (T, B, IN))
    carry = jax.tree.map(np.asarray, cell.initial_carry(params, (B,)))
    carry = tuple(carry) if isinstance(carry, tuple) else carry
    _, ys_ref = numpy_reference.unroll(reference_step(name), params, xs, carry)
    return params, jnp.asarray(xs), ys_ref


@functools.cache
def _forward(name: str) -> dict:
    """`ys32` (compute_dtype=None), `carry16` and `ys16` (bfloat16 compute), one program."""
    cell32, cell16 = _cells(name)
    params, xs, _ = _setup(name)

    def run(p, x):
        carry16, ys16 = jaxseq.unroll(cell16, p, x)
        return {"ys32": jaxseq.unroll(cell32, p, x)[1], "carry16": carry16, "ys16": ys16}

    return jax.device_get(jax.jit(run)(params, xs))


def _grads(name: str, modes: tuple[str, ...]) -> dict:
    """Gradients of mean(ys²): `g32` (float32, autodiff) and `g16_<bptt>` (bfloat16 compute)."""
    cell32, cell16 = _cells(name)
    params, xs, _ = _setup(name)

    def grad(cell, bptt):
        return jax.grad(lambda p, x: jnp.mean(jnp.square(jaxseq.unroll(cell, p, x, bptt=bptt)[1])))

    def run(p, x):
        out = {"g32": grad(cell32, "autodiff")(p, x)}
        return out | {f"g16_{bptt}": grad(cell16, bptt)(p, x) for bptt in modes}

    return jax.device_get(jax.jit(run)(params, xs))


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("name", CELLS)
def test_bf16_forward_close_to_float64_reference(name):
    _, _, ys_ref = _setup(name)
    out = _forward(name)
    for leaf in jax.tree.leaves((out["carry16"], out["ys16"])):  # the state stays float32
        assert leaf.dtype == np.float32
    err16, err32 = np.abs(out["ys16"] - ys_ref), np.abs(out["ys32"] - ys_ref)
    scale = max(1.0, float(np.abs(ys_ref).max()))
    assert _rel(out["ys16"], ys_ref) <= REL_FORWARD
    assert err16.max() <= ABS_FORWARD * scale
    assert err32.max() <= 1e-5 * scale  # compute_dtype=None: plain float32
    assert err16.max() > 10 * err32.max()  # bfloat16 really was used
    # no drift along the sequence: the state accumulates in float32
    assert err16[T // 2 :].max() <= 3 * max(err16[: T // 2].max(), 1e-3)


@pytest.mark.parametrize("name", CELLS)
def test_compute_dtype_none_has_no_bfloat16(name):
    params, xs, _ = _setup(name)
    cell32, cell16 = _cells(name)
    for cell, has_bf16 in ((cell32, False), (cell16, True)):
        program = str(jax.make_jaxpr(lambda p, x, c=cell: jaxseq.unroll(c, p, x))(params, xs))
        assert ("bf16" in program) == has_bf16, cell.name
    assert FACTORIES[name](H, compute_dtype=None).name == cell32.name
    assert cell16.name.endswith("compute_dtype=bfloat16)")


@pytest.mark.parametrize("name, modes", GRAD_CASES)
def test_bf16_gradients_close_to_float32(name, modes):
    params, _, _ = _setup(name)
    out = _grads(name, modes)
    for bptt in modes:
        g16 = out[f"g16_{bptt}"]
        chex.assert_tree_all_finite(g16)
        chex.assert_trees_all_equal_shapes_and_dtypes(g16, jax.device_get(params))
        for field, a, b in zip(params._fields, g16, out["g32"], strict=True):
            if a is not None:
                assert _rel(a, b) <= REL_GRAD, (bptt, field, _rel(a, b))


def test_bf16_inputs_accepted_and_cast_to_the_parameter_dtype():
    params, xs, _ = _setup("lstm")
    cell32, cell16 = _cells("lstm")
    xs16 = xs.astype(BF16)
    ys32, ys16 = jax.jit(
        lambda p, x: (jaxseq.unroll(cell32, p, x)[1], jaxseq.unroll(cell16, p, x)[1])
    )(params, xs16)
    zeros = np.zeros((B, H))
    _, ys_ref = numpy_reference.unroll(reference_step("lstm"), params, xs16, (zeros, zeros))
    assert ys32.dtype == ys16.dtype == jnp.float32
    # bfloat16 -> float32 is exact, so the float32 cell sees exactly these inputs
    np.testing.assert_allclose(ys32, ys_ref, atol=1e-5)
    assert _rel(ys16, ys_ref) <= REL_FORWARD


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_integer_inputs_rejected(dtype):
    params, xs, _ = _setup("lstm")
    cell = _cells("lstm")[1]
    with pytest.raises(
        TypeError, match=r"xs must have a floating dtype, got " + jnp.dtype(dtype).name
    ):
        jaxseq.unroll(cell, params, xs.astype(dtype))


FACTORY_CALLS = {
    "elman": lambda cd: jaxseq.elman(4, compute_dtype=cd),
    "lstm": lambda cd: jaxseq.lstm(4, compute_dtype=cd),
    "gru": lambda cd: jaxseq.gru(4, compute_dtype=cd),
    "gru_reset_before": lambda cd: jaxseq.gru(4, reset_after=False, compute_dtype=cd),
    "mingru": lambda cd: jaxseq.cells.mingru(4, compute_dtype=cd),
    "minlstm": lambda cd: jaxseq.cells.minlstm(4, compute_dtype=cd),
    "lru": lambda cd: jaxseq.cells.lru(4, compute_dtype=cd),
    "registry": lambda cd: jaxseq.cells.registry.by_name("irnn", 4, compute_dtype=cd),
    "classifier": lambda cd: models.classifier(jaxseq.rnn(jaxseq.lstm(4)), 2, compute_dtype=cd),
    "tagger": lambda cd: models.tagger(jaxseq.rnn(jaxseq.lstm(4)), 2, compute_dtype=cd),
}


@pytest.mark.parametrize("factory", FACTORY_CALLS)
@pytest.mark.parametrize("bad", ["int8", jnp.int32, "complex64", "not_a_dtype", 3])
def test_bad_compute_dtype_raises(factory, bad):
    with pytest.raises(ValueError, match=r"compute_dtype must be None or a floating dtype"):
        FACTORY_CALLS[factory](bad)


@pytest.mark.parametrize("factory", FACTORY_CALLS)
def test_compute_dtype_accepts_names_and_dtypes(factory):
    for value in ("bfloat16", BF16, np.dtype("float16")):
        FACTORY_CALLS[factory](value)


def test_bf16_stacked_bidirectional_layer():
    """`jaxseq.rnn` of a bfloat16-compute GRU against a NumPy stack of reference unrolls."""
    _, xs, _ = _setup("gru")
    layer = jaxseq.rnn(_cells("gru")[1], num_layers=2, bidirectional=True)
    params = _params(layer.init, IN)
    ys, final = jax.jit(layer.apply)(params, xs)
    step, inputs, finals = reference_step("gru"), np.asarray(xs), []
    for layer_params in params:
        outputs = []
        for direction, p in enumerate(layer_params):
            h, y = numpy_reference.unroll(step, p, inputs, np.zeros((B, H)), reverse=direction == 1)
            finals.append(h)
            outputs.append(y)
        inputs = np.concatenate(outputs, axis=-1)
    assert ys.dtype == final.dtype == jnp.float32
    assert _rel(ys, inputs) <= REL_FORWARD
    assert _rel(final, np.stack(finals)) <= REL_FORWARD
    assert np.abs(np.asarray(ys) - inputs).max() <= ABS_FORWARD


def test_dense_readout_compute_dtype():
    params = models.DenseParams(w=jnp.asarray(normal(_key(4), (H, 5))), b=jnp.zeros(5))
    x = jnp.asarray(normal(_key(5), (B, H)))
    y16 = models.dense_apply(params, x, BF16)
    exact = np.asarray(x, np.float64) @ np.asarray(params.w, np.float64)
    assert y16.dtype == jnp.float32
    assert _rel(y16, exact) <= REL_FORWARD
    assert np.abs(np.asarray(y16) - exact).max() > 1e-5  # bfloat16 really was used


def test_bf16_training_reduces_loss():
    """A classifier (LSTM and readout in bfloat16 compute) learns sign(Σ x_t) with Adam."""
    model = models.classifier(jaxseq.rnn(jaxseq.lstm(8, compute_dtype=BF16)), 2, compute_dtype=BF16)
    xs = jnp.asarray(normal(_key(6), (12, 64, 1)))
    labels = (jnp.sum(xs[..., 0], axis=0) > 0).astype(jnp.int32)

    def loss_fn(params, batch, key):
        return models.cross_entropy(model.apply(params, batch[0]), batch[1]), {}

    optimizer = training.make_optimizer("adam", 3e-2)
    params0 = _params(model.init, 1)
    state = training.init_state(jax.tree.map(jnp.copy, params0), optimizer)
    step = training.make_train_step(loss_fn, optimizer)
    losses = []
    for t in range(STEPS):
        state, metrics = step(state, (xs, labels), _key(t))
        losses.append(metrics["loss"])
    losses = np.asarray(jax.device_get(losses))
    assert np.isfinite(losses).all()
    assert losses[-5:].mean() < 0.5 * losses[0], losses
    for new, old in zip(jax.tree.leaves(state.params), jax.tree.leaves(params0)):
        assert new.dtype == jnp.float32  # params stay float32
        assert not np.array_equal(new, old)
