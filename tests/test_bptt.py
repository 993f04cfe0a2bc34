"""The sequence-level VJP (`unroll(bptt="fused")`, `jaxseq.bptt`).

References: central finite differences (`check_grads`) in float64, and JAX's
own step-by-step autodiff of the plain scan (`bptt="autodiff"`), which shares
no backward code with `jaxseq.bptt`. Also checked: the structure the speed
depends on (one matrix product per backward step), and the modes a custom VJP
does and does not support.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import jaxprs
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxseq

T, IN, H, B = 5, 3, 4, 2
F64 = dict(dtype=jnp.float64)

CELLS = {
    "elman": jaxseq.elman(H, **F64),
    "elman_relu": jaxseq.elman(H, activation="relu", **F64),
    "lstm": jaxseq.lstm(H, **F64),
    "lstm_peephole": jaxseq.lstm(H, peephole=True, **F64),
    "lstm_coupled": jaxseq.lstm(H, coupled=True, peephole=True, **F64),
    "lstm_no_forget": jaxseq.lstm(H, forget_gate=False, **F64),
    "gru": jaxseq.gru(H, **F64),
    "gru_no_reset": jaxseq.gru(H, reset_gate=False, **F64),
}
OPTIONS = {
    "plain": {},
    "hoisted": dict(hoist=True),
    "reverse": dict(reverse=True),
    "lengths": dict(lengths=(T, 2)),
    "lengths_reverse": dict(lengths=(0, 3), reverse=True),
    "unroll2": dict(unroll=2),
}


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _setup(name: str, seed: int = 0):
    """Random float64 params (biases and peepholes non-zero), inputs and initial carry."""
    cell = CELLS[name]
    rng = np.random.default_rng(seed)
    params = jax.tree.map(
        lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape)),
        cell.init(jax.random.key(seed), IN),
    )
    xs = jnp.asarray(rng.standard_normal((T, B, IN)))
    carry = jax.tree.map(
        lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape)),
        cell.initial_carry(params, (B,)),
    )
    return cell, params, xs, carry


def _loss(cell, params, xs, carry, bptt="fused", lengths=None, **options):
    """Depends non-linearly on every output and every leaf of the final carry."""
    if lengths is not None:
        lengths = jnp.asarray(lengths)
    final, ys = jaxseq.unroll(cell, params, xs, carry, lengths=lengths, bptt=bptt, **options)
    return jnp.sum(jnp.sin(ys) * ys) + sum(jnp.sum(jnp.cos(c)) for c in jax.tree.leaves(final))


# every option set for the two richest cells, two for the rest (compilation dominates)
CASES = [(name, label) for name in ("lstm_peephole", "gru") for label in OPTIONS] + [
    (name, label)
    for name in CELLS
    if name not in ("lstm_peephole", "gru")
    for label in ("plain", "hoisted")
]


@functools.cache
def _both_grads(name: str):
    """Gradients w.r.t. params, inputs and initial carry, fused and autodiff, in one jit."""
    cell, params, xs, carry = _setup(name)
    labels = [label for n, label in CASES if n == name]

    @jax.jit
    def run(params, xs, carry):
        grad = jax.grad(_loss, argnums=(1, 2, 3))
        return {
            (label, bptt): grad(cell, params, xs, carry, bptt, **OPTIONS[label])
            for label in labels
            for bptt in ("fused", "autodiff")
        }

    return run(params, xs, carry)


def test_fused_is_used_for_cells_with_one_recurrent_matmul():
    for name, cell in CELLS.items():
        assert cell.recurrent is not None, name
    assert jaxseq.gru(H, reset_after=False).recurrent is None  # a second, dependent product
    assert jaxseq.mingru(H).recurrent is None  # no recurrent product at all


@pytest.mark.parametrize(("name", "label"), CASES)
def test_fused_gradients_equal_autodiff(name, label):
    grads = _both_grads(name)
    fused, autodiff = grads[label, "fused"], grads[label, "autodiff"]
    chex.assert_trees_all_close(fused, autodiff, rtol=1e-11, atol=1e-12)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(fused))


@pytest.mark.parametrize("name", ["lstm_peephole", "gru", "elman"])
def test_fused_gradients_match_finite_differences(name):
    cell, params, xs, carry = _setup(name, seed=1)
    loss = jax.jit(functools.partial(_loss, cell, lengths=(T, 3), reverse=True))
    check_grads(loss, (params, xs, carry), order=1, modes=["rev"])


def test_fused_reverse_over_reverse_matches_autodiff():
    """A custom VJP's backward is ordinary JAX code, so grad-of-grad works (e.g. for HVPs)."""
    cell, params, xs, carry = _setup("lstm")

    def hvp(bptt):
        grad = jax.grad(lambda x: _loss(cell, params, x, carry, bptt))
        return jax.grad(lambda x: jnp.vdot(grad(x), jnp.ones_like(x)))(xs)

    chex.assert_trees_all_close(hvp("fused"), hvp("autodiff"), rtol=1e-10, atol=1e-12)


def test_forward_mode_needs_bptt_autodiff():
    cell, params, xs, carry = _setup("gru")
    tangent = jnp.ones_like(xs)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda x: _loss(cell, params, x, carry, "fused"), (xs,), (tangent,))
    _, out = jax.jvp(lambda x: _loss(cell, params, x, carry, "autodiff"), (xs,), (tangent,))
    assert np.isfinite(out)


def test_vmap_over_parameter_sets():
    """K models at once (as `make_train_step(num_seeds=K)` does) get their own gradients."""
    cell, params, xs, carry = _setup("lstm")
    stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
    per_seed = jax.vmap(jax.grad(_loss, argnums=1), in_axes=(None, 0, None, None))
    grads = jax.jit(per_seed, static_argnums=0)(cell, stacked, xs, carry)
    for k in range(2):
        one = jax.tree.map(lambda a: a[k], stacked)
        expected = jax.grad(_loss, argnums=1)(cell, one, xs, carry, "autodiff")
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[k], grads), expected, rtol=1e-11)


def _backward_matmuls(bptt: str) -> list[int]:
    """dot_general count of each scan body in the jaxpr of the LSTM's gradient (hoisted)."""
    cell, params, xs, carry = _setup("lstm")
    jaxpr = jax.make_jaxpr(
        jax.grad(functools.partial(_loss, bptt=bptt, hoist=True), argnums=1), static_argnums=0
    )
    closed = jaxpr(cell, params, xs, carry)
    return sorted(
        jaxprs.count(s.params["jaxpr"].jaxpr, "dot_general")
        for s in jaxprs.find(closed.jaxpr, "scan")
    )


def test_fused_backward_loop_has_one_matmul_per_step():
    """Autodiff's backward step also forms the weight's share (h_{t-1}ᵀ ∂z_t) in the loop."""
    assert _backward_matmuls("fused") == [1, 1]  # forward loop, backward loop
    assert _backward_matmuls("autodiff") == [1, 2]


def test_unknown_bptt_is_rejected():
    cell, params, xs, carry = _setup("elman")
    with pytest.raises(ValueError, match="bptt"):
        jaxseq.unroll(cell, params, xs, bptt="cudnn")


def test_bad_hoist_is_rejected():
    cell, params, xs, carry = _setup("elman")
    with pytest.raises(TypeError, match="hoist must be None, True or False, got 'yes'"):
        jaxseq.unroll(cell, params, xs, hoist="yes")
