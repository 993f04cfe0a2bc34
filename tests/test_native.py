"""The fused CPU kernels (`jaxseq.native`, `unroll(kernel="native")`).

The kernels are checked only against implementations that share none of their code:

- values: the float64 Python loop of `numpy_reference.py` (lengths, reverse and
  multi-dimensional batches included), written from the equations;
- gradients: JAX's step-by-step autodiff of the plain XLA scan
  (`kernel="xla", bptt="autodiff"`), and central finite differences (`check_grads`);
- routing: the lowered StableHLO, which does or does not call `jaxseq_rnn_forward`.

The kernels split the work over threads by batch rows (B >= 4 * threads) or by
hidden units in blocks of 8; `test_thread_partitions` picks B, H and
`JAXSEQ_NATIVE_THREADS` to run both. XLA compilation dominates the runtime, so
each jitted function covers every cell and option of one shape.
"""

import functools
import math
import os
import re
import subprocess
import sys
import textwrap
import threading

import chex
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference
import pytest
from jax.test_util import check_grads

import jaxseq
from jaxseq import native

_OK, _WHY = native.status()
if not _OK:
    pytest.skip(f"jaxseq.native cannot run here: {_WHY}", allow_module_level=True)
if jax.default_backend() != "cpu" or jax.device_count() > 1:
    pytest.skip("jaxseq.native runs on a single CPU device only", allow_module_level=True)

T, D, H, B = 7, 3, 16, 5
NAMES = ("elman", "lstm", "gru")
FACTORIES = {"elman": jaxseq.elman, "lstm": jaxseq.lstm, "gru": jaxseq.gru}
OPTIONS = {  # label: (with lengths, reverse)
    "plain": (False, False),
    "lengths": (True, False),
    "reverse": (False, True),
    "lengths_reverse": (True, True),
}
NATIVE = dict(kernel="native")
AUTODIFF = dict(kernel="xla", bptt="autodiff")  # lax.scan differentiated by JAX
VALUE_TOL = dict(rtol=1e-5, atol=1e-5)
GRAD_RTOL = 1e-5  # relative to each gradient's largest entry
CUSTOM_CALL = "jaxseq_rnn_forward"


@functools.cache
def _cell(name: str, hidden: int = H):
    return FACTORIES[name](hidden)


def _lengths(batch_shape: tuple[int, ...], steps: int = T) -> np.ndarray:
    """int32 `[*batch]`: 0 and `steps` first, then lengths in between."""
    pattern = [steps, 0, 3, 1, steps - 1, 2, steps, 5, 4, 6, 1, 0, steps]
    size = math.prod(batch_shape)
    return np.minimum(np.resize(np.array(pattern, np.int32), size), steps).reshape(batch_shape)


def _params(cell, rng: np.random.Generator, input_size: int = D):
    """Random float32 params of `cell` (non-zero biases), without compiling `cell.init`."""
    shapes = jax.eval_shape(lambda key: cell.init(key, input_size), jax.random.key(0))

    def draw(s):
        scale = 1.0 / math.sqrt(s.shape[0]) if len(s.shape) == 2 else 0.5
        return jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype)

    return jax.tree.map(draw, shapes)


def _carry(cell, params, rng: np.random.Generator, batch_shape: tuple[int, ...]):
    shapes = jax.eval_shape(lambda p: cell.initial_carry(p, batch_shape), params)
    return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), shapes)


@functools.cache
def _inputs(hidden: int, batch_shape: tuple[int, ...], steps: int = T, seed: int = 0):
    """Per cell: `(params, xs, carry, weights)`; `weights` are the loss's on ys and the carry."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for name in NAMES:
        cell = _cell(name, hidden)
        params = _params(cell, rng)
        xs = jnp.asarray(rng.standard_normal((steps, *batch_shape, D)), jnp.float32)
        carry = _carry(cell, params, rng, batch_shape)
        w_ys = jnp.asarray(rng.standard_normal((steps, *batch_shape, hidden)), jnp.float32)
        w_carry = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), a.dtype), carry)
        inputs[name] = (params, xs, carry, (w_ys, w_carry))
    return inputs


def _reference(name: str, params, xs, carry, lengths, reverse: bool):
    """`(carry, ys)` of the float64 NumPy loop; an LSTM carry comes back as a tuple `(h, c)`."""
    carry = jax.tree.map(np.asarray, carry)
    carry = tuple(carry) if isinstance(carry, tuple) else carry
    step = numpy_reference.STEPS[name]
    return numpy_reference.unroll(
        step, params, np.asarray(xs), carry, lengths=lengths, reverse=reverse
    )


def _loss(cell, params, xs, carry, weights, lengths, reverse, kernel: dict):
    """A weighted sum of every output and every leaf of the final carry, with the outputs."""
    final, ys = jaxseq.unroll(cell, params, xs, carry, lengths=lengths, reverse=reverse, **kernel)
    w_ys, w_carry = weights
    value = jnp.sum(w_ys * ys) + jnp.sum(w_ys[0] * ys[-1] * ys[0])
    for w, leaf in zip(jax.tree.leaves(w_carry), jax.tree.leaves(final), strict=True):
        value = value + jnp.sum(w * leaf) + jnp.sum(leaf * leaf)
    return value, (final, ys)


def _grads_function(hidden: int, labels, names=NAMES, **kernel):
    """`(inputs, lengths) -> {(name, label): ((final, ys), grads)}`, grads w.r.t. params, xs, carry.

    Not jitted: the caller jits it, so that `JAXSEQ_NATIVE_THREADS` is read when it traces.
    """

    def run(inputs, lengths):
        out = {}
        for name in names:
            cell = _cell(name, hidden)
            params, xs, carry, weights = inputs[name]
            for label in labels:
                with_lengths, reverse = OPTIONS[label]

                def loss(params, xs, carry):
                    lens = lengths if with_lengths else None
                    return _loss(cell, params, xs, carry, weights, lens, reverse, kernel)

                grad = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)
                grads, outputs = grad(params, xs, carry)
                out[name, label] = outputs, grads
        return out

    return run


@functools.cache
def _native_forward(hidden: int, batch_shape: tuple[int, ...]):
    """Jitted `(inputs, lengths) -> {(name, label): (final, ys)}`, forward only (no residuals)."""

    @jax.jit
    def run(inputs, lengths):
        out = {}
        for name in NAMES:
            params, xs, carry, _ = inputs[name]
            for label, (with_lengths, reverse) in OPTIONS.items():
                lens = lengths if with_lengths else None
                out[name, label] = jaxseq.unroll(
                    _cell(name, hidden), params, xs, carry, lengths=lens, reverse=reverse, **NATIVE
                )
        return out

    return run


@functools.cache
def _native_grads(hidden: int, batch_shape: tuple[int, ...]):
    return jax.jit(_grads_function(hidden, tuple(OPTIONS), **NATIVE))(
        _inputs(hidden, batch_shape), _lengths(batch_shape)
    )


@functools.cache
def _autodiff(hidden: int, batch_shape: tuple[int, ...], labels: tuple[str, ...]):
    """The reference: `_grads_function` of the plain scan, compiled once per shape and labels.

    Unoptimised (XLA's backend at -O0), which halves its compile time.
    """
    lowered = jax.jit(_grads_function(hidden, labels, **AUTODIFF)).lower(
        _inputs(hidden, batch_shape), _lengths(batch_shape)
    )
    return lowered.compile(compiler_options={"xla_backend_optimization_level": 0})


@functools.cache
def _autodiff_grads(hidden: int, batch_shape: tuple[int, ...], labels=tuple(OPTIONS)):
    run = _autodiff(hidden, batch_shape, labels)
    return run(_inputs(hidden, batch_shape), _lengths(batch_shape))


def _assert_grads_close(actual, expected, rtol: float = GRAD_RTOL):
    """Leaf by leaf, within `rtol` of the leaf's largest entry; every gradient non-zero."""
    chex.assert_trees_all_equal_shapes_and_dtypes(actual, expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        scale = float(np.max(np.abs(e)))
        assert scale > 0
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale)


def _assert_matches_reference(name, outputs, inputs, lengths, label):
    final, ys = outputs
    params, xs, carry, _ = inputs[name]
    with_lengths, reverse = OPTIONS[label]
    expected_final, expected_ys = _reference(
        name, params, xs, carry, lengths if with_lengths else None, reverse
    )
    np.testing.assert_allclose(ys, expected_ys, **VALUE_TOL)
    for leaf, expected in zip(jax.tree.leaves(final), jax.tree.leaves(expected_final), strict=True):
        np.testing.assert_allclose(leaf, expected, **VALUE_TOL)


cells_and_options = pytest.mark.parametrize(
    ("name", "label"), [(name, label) for name in NAMES for label in OPTIONS]
)


# ----------------------------------------------------------------- values


@cells_and_options
def test_forward_matches_numpy(name, label):
    inputs, lengths = _inputs(H, (B,)), _lengths((B,))
    outputs = _native_forward(H, (B,))(inputs, lengths)[name, label]
    _assert_matches_reference(name, outputs, inputs, lengths, label)


@cells_and_options
def test_forward_with_saved_residuals_matches_numpy(name, label):
    """The forward pass under `grad` (which saves the activations) gives the same values."""
    outputs, _ = _native_grads(H, (B,))[name, label]
    _assert_matches_reference(name, outputs, _inputs(H, (B,)), _lengths((B,)), label)


@pytest.mark.parametrize("name", NAMES)
def test_saturated_forward_matches_numpy(name):
    """Inputs ×40 drive every gate into saturation (exp's clamp, tanh's bound)."""
    inputs = {
        n: (params, 40.0 * xs, carry, w) for n, (params, xs, carry, w) in _inputs(H, (B,)).items()
    }
    lengths = _lengths((B,))
    outputs = _native_forward(H, (B,))(inputs, lengths)
    for label in ("plain", "lengths_reverse"):
        assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(outputs[name, label]))
        _assert_matches_reference(name, outputs[name, label], inputs, lengths, label)


def test_lstm_final_carry_is_an_lstm_carry():
    params, xs, carry, _ = _inputs(H, (B,))["lstm"]
    final, ys = _native_forward(H, (B,))(_inputs(H, (B,)), _lengths((B,)))["lstm", "lengths"]
    assert isinstance(final, jaxseq.LSTMCarry)
    chex.assert_shape([final.h, final.c], (B, H))
    chex.assert_shape(ys, (T, B, H))
    expected_h, expected_c = _reference("lstm", params, xs, carry, _lengths((B,)), False)[0]
    np.testing.assert_allclose(final.h, expected_h, **VALUE_TOL)
    np.testing.assert_allclose(final.c, expected_c, **VALUE_TOL)
    assert not np.allclose(final.h, final.c, atol=1e-2)  # h and c are not swapped or shared


def test_eager_call_matches_numpy():
    """Without `jit` the custom call runs op by op."""
    params, xs, carry, _ = _inputs(H, (B,))["gru"]
    lengths = _lengths((B,))
    final, ys = jaxseq.unroll(_cell("gru"), params, xs, carry, lengths=lengths, **NATIVE)
    expected_final, expected_ys = _reference("gru", params, xs, carry, lengths, False)
    np.testing.assert_allclose(ys, expected_ys, **VALUE_TOL)
    np.testing.assert_allclose(final, expected_final, **VALUE_TOL)


# -------------------------------------------------------------- gradients


@cells_and_options
def test_gradients_match_autodiff(name, label):
    _, grads = _native_grads(H, (B,))[name, label]
    _, expected = _autodiff_grads(H, (B,))[name, label]
    _assert_grads_close(grads, expected)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_gradients_match_finite_differences(name):
    hidden, batch_shape, steps = 8, (3,), 4
    cell = _cell(name, hidden)
    params, xs, carry, weights = _inputs(hidden, batch_shape, steps, seed=1)[name]
    lengths = np.array([steps, 0, 2], np.int32)

    def loss(params, xs, carry):  # not jitted: see test_grad_of_a_jitted_function
        return _loss(cell, params, xs, carry, weights, lengths, True, NATIVE)[0]

    check_grads(loss, (params, xs, carry), order=1, modes=["rev"], eps=1e-2, atol=2e-2, rtol=2e-2)


def test_grad_of_a_jitted_function():
    cell = _cell("lstm")
    params, xs, carry, weights = _inputs(H, (B,))["lstm"]

    @jax.jit
    def loss(params):
        return _loss(cell, params, xs, carry, weights, None, False, NATIVE)[0]

    _, expected = _autodiff_grads(H, (B,))["lstm", "plain"]
    _assert_grads_close(jax.grad(loss)(params), expected[0])


def test_reverse_over_reverse_names_kernel_xla():
    """The kernel is first order: grad of grad says to pass kernel='xla', which then works."""
    hidden, batch_shape, steps = 8, (3,), 4
    cell = _cell("lstm", hidden)
    params, xs, carry, weights = _inputs(hidden, batch_shape, steps, seed=1)["lstm"]

    def hvp(kernel):
        grad = jax.grad(lambda x: _loss(cell, params, x, carry, weights, None, False, kernel)[0])
        return jax.jit(jax.grad(lambda x: jnp.vdot(grad(x), jnp.ones_like(x))))(xs)

    with pytest.raises(TypeError, match="kernel='xla'"):
        hvp(NATIVE)
    actual = hvp(dict(kernel="xla"))  # the sequence-level VJP of XLA's scan
    expected = hvp(AUTODIFF)
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale)


# ----------------------------------------------------------------- threads

# (threads, B, H): which partition `partition()` in rnn_cpu.cc picks
PARTITIONS = {
    "batch_1_thread": (1, 9, 16),  # one part, all rows
    "batch_2_threads": (2, 9, 16),  # rows 4 + 5, no barrier
    "units_3_threads_capped": (3, 9, 16),  # 9 < 12 rows: units 8 + 8 (2 blocks), a barrier
    "units_2_threads_uneven": (2, 3, 24),  # units 8 + 16
    "units_3_threads": (3, 3, 24),  # units 8 + 8 + 8
    "batch_2_threads_h8": (2, 9, 8),  # rows 4 + 5 of a single 8-unit block
    "one_block_3_threads": (3, 9, 8),  # 9 < 12 rows but one block: rows 4 + 5
}
THREAD_LABELS = ("lengths",)  # the kernel's reverse flag only changes the order of t


@pytest.mark.parametrize("partition", PARTITIONS)
def test_thread_partitions(partition, monkeypatch):
    threads, batch, hidden = PARTITIONS[partition]
    monkeypatch.setenv("JAXSEQ_NATIVE_THREADS", str(threads))
    assert native.threads() == threads
    inputs, lengths = _inputs(hidden, (batch,)), _lengths((batch,))

    # threads() is read when tracing: a fresh function, lowered with this environment
    lowered = jax.jit(_grads_function(hidden, THREAD_LABELS, **NATIVE)).lower(inputs, lengths)
    text = lowered.as_text()
    assert f"threads = {threads} : i64" in text
    assert "jaxseq_rnn_backward" in text
    actual = lowered.compile()(inputs, lengths)

    expected = _autodiff_grads(hidden, (batch,), THREAD_LABELS)
    for name in NAMES:
        for label in THREAD_LABELS:
            outputs, grads = actual[name, label]
            _assert_matches_reference(name, outputs, inputs, lengths, label)
            _assert_grads_close(grads, expected[name, label][1])


# ------------------------------------------------------------ micro-kernels

# (threads, B, H): the products' tiles. A call's columns N are G·n (forward; n the
# thread's units) or n (backward), cut into panels of 16 (AVX2) or 32 (AVX-512)
# with a narrower last one; rows go in blocks of at most 6 (AVX2) or 12 (AVX-512).
TILES = {
    # one thread, 24 rows: blocks of 12 (AVX-512); n = 40 units: N = 160 (LSTM),
    # 120 = 3·32 + 24 (GRU), 40 = 32 + 8 (Elman, and every backward product); the
    # in-kernel weight gradients' products have D = 3 and H = 40 rows
    "rows_24_h40": (1, 24, 40),
    # 2 threads split 24 units as 8 + 16: N = 32, 24, 8 and 64, 48, 16
    "units_8_16": (2, 3, 24),
}


@pytest.mark.parametrize("isa", native.ISAS)
@pytest.mark.parametrize("tiles", TILES)
def test_micro_kernels(isa, tiles, monkeypatch):
    """Each micro-kernel this CPU runs, on tiles of every width: the NumPy reference's
    values and autodiff's gradients."""
    if isa not in native.isas():
        pytest.skip(f"this CPU does not run the {isa} micro-kernel")
    threads, batch, hidden = TILES[tiles]
    monkeypatch.setenv("JAXSEQ_NATIVE_ISA", isa)
    monkeypatch.setenv("JAXSEQ_NATIVE_THREADS", str(threads))
    assert native.isa() == isa
    inputs, lengths = _inputs(hidden, (batch,)), _lengths((batch,))
    lowered = jax.jit(_grads_function(hidden, THREAD_LABELS, **NATIVE)).lower(inputs, lengths)
    assert f"wide = {int(isa == 'avx512')} : i64" in lowered.as_text()
    actual = lowered.compile()(inputs, lengths)
    expected = _autodiff_grads(hidden, (batch,), THREAD_LABELS)
    for name in NAMES:
        for label in THREAD_LABELS:
            outputs, grads = actual[name, label]
            _assert_matches_reference(name, outputs, inputs, lengths, label)
            _assert_grads_close(grads, expected[name, label][1])


@pytest.mark.parametrize("isa", native.ISAS)
def test_saturated_gates_each_micro_kernel(isa, monkeypatch):
    """Inputs ×40 saturate every gate (exp's clamp, tanh's bound, the reciprocal of a
    huge 1 + e^-x) on one thread, whose 40 units run 16 lanes at a time and a last 8
    under AVX-512: the NumPy reference's values and autodiff's gradients."""
    if isa not in native.isas():
        pytest.skip(f"this CPU does not run the {isa} micro-kernel")
    threads, batch, hidden = TILES["rows_24_h40"]
    monkeypatch.setenv("JAXSEQ_NATIVE_ISA", isa)
    monkeypatch.setenv("JAXSEQ_NATIVE_THREADS", str(threads))
    inputs = {
        name: (params, 40.0 * xs, carry, w)
        for name, (params, xs, carry, w) in _inputs(hidden, (batch,)).items()
    }
    lengths = _lengths((batch,))
    actual = jax.jit(_grads_function(hidden, THREAD_LABELS, **NATIVE))(inputs, lengths)
    expected = _autodiff(hidden, (batch,), THREAD_LABELS)(inputs, lengths)
    for name in NAMES:
        outputs, grads = actual[name, "lengths"]
        assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves((outputs, grads)))
        _assert_matches_reference(name, outputs, inputs, lengths, "lengths")
        # a saturated gate's derivative s (1 - s) loses most of its digits in float32
        # (1 - s for s near 1) in both implementations: 2e-4 of the largest entry seen
        _assert_grads_close(grads, expected[name, "lengths"][1], rtol=1e-3)


def test_bad_isa_is_named(monkeypatch):
    monkeypatch.setenv("JAXSEQ_NATIVE_ISA", "sse2")
    with pytest.raises(ValueError, match=r"JAXSEQ_NATIVE_ISA must be one of \('avx2', 'avx512'\)"):
        native.isa()
    missing = [isa for isa in native.ISAS if isa not in native.isas()]
    for isa in missing:  # e.g. "avx512" on a CPU with AVX2 only
        monkeypatch.setenv("JAXSEQ_NATIVE_ISA", isa)
        with pytest.raises(ValueError, match=f"JAXSEQ_NATIVE_ISA='{isa}', but this CPU runs only"):
            native.isa()


def _fake_cache_info(root, levels):
    for i, (level, kind, size) in enumerate(levels):
        index = root / f"index{i}"
        index.mkdir(parents=True)
        for name, text in (("level", level), ("type", kind), ("size", size)):
            (index / name).write_text(text + "\n")
    return root


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        ([("1", "Data", "48K"), ("1", "Instruction", "64K"), ("2", "Unified", "2048K")], 2 << 20),
        ([("1", "Data", "32K"), ("2", "Unified", "512K"), ("3", "Unified", "32768K")], 512 << 10),
        ([("2", "Unified", "1M")], 1 << 20),
        ([("1", "Data", "32K"), ("3", "Unified", "8M")], 777),  # no L2: the default
        ([("2", "Unified", "big")], 777),
        ([], 777),
    ],
)
def test_l2_bytes_reads_sysfs(levels, expected, tmp_path):
    root = _fake_cache_info(tmp_path / "cache", levels)
    assert native.l2_bytes(default=777, root=root) == expected


def test_grads_in_kernel_bound_is_twice_this_cpus_l2():
    assert native.GRADS_IN_KERNEL_BYTES == 2 * native.l2_bytes()


# (threads, B, H, GRADS_IN_KERNEL_BYTES, GRU_GRADS_IN_KERNEL_BYTES, chunk rows): where
# the weight gradients are summed, and in chunks of how many rows (GRAD_CHUNK_ROWS
# within GRADS_IN_KERNEL_BYTES, else GRAD_CHUNK_ROWS_PAST_L2, both set to it). The
# default (in the kernel, all T = 7 steps at once) runs everywhere else. Every path
# prefetches the gradients' tiles (GRAD_TILE_PREFETCH) but "batch_chunks_no_prefetch".
GRAD_PATHS = {
    # the kernel leaves them to XLA; the LSTM and Elman forward kernels save [x | h]ᵀ,
    # by rows 4 + 5, or by units 8 + 16 (x's 3 features then split 1 + 2)
    "xla_products": (2, 9, 16, 0, 0, 128),
    "xla_products_units": (2, 3, 24, 0, 0, 128),
    "batch_chunks": (2, 9, 16, 10**6, 10**6, 8),  # rows 4 + 5: 2 steps, then 1 step, at a time
    "batch_chunks_no_prefetch": (2, 9, 16, 10**6, 10**6, 8),
    "units_chunks": (2, 3, 24, 10**6, 10**6, 6),  # units 8 + 16, all 3 rows: 2 steps at a time
    "one_step_at_a_time": (1, 5, 16, 10**6, 10**6, 1),
    # the GRU's past GRADS_IN_KERNEL_BYTES, in the kernel (the default); the others', XLA's
    "gru_past_l2": (2, 9, 16, 0, 10**6, 8),
}


@pytest.mark.parametrize("path", GRAD_PATHS)
def test_weight_gradient_paths(path, monkeypatch):
    """Summed by the kernel in chunks of steps that split T = 7 unevenly, forwards and
    reversed, over either thread partition, or by XLA's products: autodiff's values."""
    threads, batch, hidden, max_bytes, gru_max_bytes, chunk_rows = GRAD_PATHS[path]
    prefetch = not path.endswith("_no_prefetch")
    monkeypatch.setattr(native, "GRAD_TILE_PREFETCH", prefetch)
    monkeypatch.setenv("JAXSEQ_NATIVE_THREADS", str(threads))
    monkeypatch.setattr(native, "GRADS_IN_KERNEL_BYTES", max_bytes)
    monkeypatch.setattr(native, "GRU_GRADS_IN_KERNEL_BYTES", gru_max_bytes)
    monkeypatch.setattr(native, "GRAD_CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(native, "GRAD_CHUNK_ROWS_PAST_L2", chunk_rows)
    in_kernel = {name: (gru_max_bytes if name == "gru" else max_bytes) > 0 for name in NAMES}
    assert {name: native.grads_in_kernel(name, D, hidden) for name in NAMES} == in_kernel
    inputs, lengths = _inputs(hidden, (batch,)), _lengths((batch,))
    labels = ("lengths", "reverse")  # (with lengths, unroll reverses within them)
    lowered = jax.jit(_grads_function(hidden, labels, **NATIVE)).lower(inputs, lengths)
    text = lowered.as_text()
    assert "reverse = 1 : i64" in text
    # one backward call per (cell, label); a kernel that leaves the sums to XLA gets 0
    chunks = [int(c) for c in re.findall(r"chunk_rows = (\d+) : i64", text)]
    expected_chunks = [chunk_rows if in_kernel[name] else 0 for name in NAMES for _ in labels]
    assert sorted(chunks) == sorted(expected_chunks)
    prefetches = [int(p) for p in re.findall(r"prefetch = (\d) : i64", text)]
    expected = [int(in_kernel[name] and prefetch) for name in NAMES for _ in labels]
    assert sorted(prefetches) == sorted(expected)
    actual = lowered.compile()(inputs, lengths)
    expected = _autodiff_grads(hidden, (batch,), labels)
    for name in NAMES:
        for label in labels:
            _assert_grads_close(actual[name, label][1], expected[name, label][1])


def test_gru_sums_its_gradients_in_the_kernel_past_l2():
    """With this CPU's bounds: the GRU's kernel sums them at shape D's size, in chunks
    of GRAD_CHUNK_ROWS_PAST_L2 rows, but not past the kernel's kept scratch (32 MiB);
    the LSTM's leaves them to XLA at D, and both sum them in chunks of
    GRAD_CHUNK_ROWS at shape A's."""
    big, small = (256, 512), (32, 128)  # (D, H)
    assert native.grads_in_kernel("gru", *big) and not native.grads_in_kernel("lstm", *big)
    assert native.grad_chunk_rows("gru", *big) == native.GRAD_CHUNK_ROWS_PAST_L2
    assert not native.grads_in_kernel("gru", 256, 2048)  # 56 MiB: past the kept scratch
    for name in ("lstm", "gru"):
        assert native.grads_in_kernel(name, *small)
        assert native.grad_chunk_rows(name, *small) == native.GRAD_CHUNK_ROWS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("peephole", 3, 16), r"kind must be one of \('elman', 'lstm', 'gru'\), got 'peephole'"),
        (("lstm", 0, 16), "D must be a positive integer, got 0"),
        (("gru", 3, 2.5), "H must be a positive integer, got 2.5"),
    ],
)
@pytest.mark.parametrize(
    "function", [native.grads_in_kernel, native.grad_chunk_rows, native.xh_transposed]
)
def test_layout_choices_reject_bad_arguments(function, args, message):
    with pytest.raises(ValueError, match=message):
        function(*args)


@pytest.mark.parametrize(
    ("knob", "value", "cell", "max_bytes"),
    [("GRAD_CHUNK_ROWS", 0, "lstm", None), ("GRAD_CHUNK_ROWS_PAST_L2", 2.5, "gru", 0)],
)
def test_bad_grad_chunk_rows_is_named(knob, value, cell, max_bytes, monkeypatch):
    monkeypatch.setattr(native, knob, value)
    if max_bytes is not None:  # past GRADS_IN_KERNEL_BYTES: the GRU's kernel reads the knob
        monkeypatch.setattr(native, "GRADS_IN_KERNEL_BYTES", max_bytes)
    params, xs, carry, weights = _inputs(H, (B,))[cell]
    with pytest.raises(ValueError, match=f"{knob} must be a positive integer, got {value}"):
        jax.grad(lambda p: _loss(_cell(cell), p, xs, carry, weights, None, False, NATIVE)[0])(
            params
        )


@pytest.mark.parametrize("value", [1, None, "yes"])
def test_bad_grad_tile_prefetch_is_named(value, monkeypatch):
    monkeypatch.setattr(native, "GRAD_TILE_PREFETCH", value)
    params, xs, carry, weights = _inputs(H, (B,))["lstm"]
    with pytest.raises(
        ValueError, match=f"GRAD_TILE_PREFETCH must be True or False, got {value!r}"
    ):
        jax.grad(lambda p: _loss(_cell("lstm"), p, xs, carry, weights, None, False, NATIVE)[0])(
            params
        )


def test_concurrent_calls_get_their_own_results(monkeypatch):
    """Two Python threads run the kernels at once, many times (one call holds the
    helper pool, another starting meanwhile uses threads of its own): every call
    returns what it returns alone, which matches the NumPy reference. Hidden units split
    over 2 threads: a barrier per step."""
    monkeypatch.setenv("JAXSEQ_NATIVE_THREADS", "2")
    hidden, batch = 24, 3
    inputs = [_inputs(hidden, (batch,)), _inputs(hidden, (batch,), seed=3)]
    lengths = _lengths((batch,))
    run = jax.jit(_grads_function(hidden, THREAD_LABELS, **NATIVE)).lower(inputs[0], lengths)
    assert "threads = 2 : i64" in run.as_text()
    run = run.compile()
    alone = [jax.device_get(run(x, lengths)) for x in inputs]
    for k, name in ((k, name) for k in range(2) for name in NAMES):  # alone, still right
        _assert_matches_reference(name, alone[k][name, "lengths"][0], inputs[k], lengths, "lengths")
    results = {}

    def calls(k):
        results[k] = [jax.device_get(run(inputs[k], lengths)) for _ in range(20)]

    workers = [threading.Thread(target=calls, args=(k,)) for k in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert not any(worker.is_alive() for worker in workers), "a kernel call hung"
    for k in range(2):
        assert len(results[k]) == 20
        for result in results[k]:
            chex.assert_trees_all_close(result, alone[k], rtol=1e-6, atol=1e-6)
    assert not np.allclose(alone[0]["gru", "lengths"][0][1], alone[1]["gru", "lengths"][0][1])


def test_reused_scratch_never_reaches_a_result(monkeypatch):
    """The kernels reuse their scratch blocks (packed weights, working rows, the step's
    h, gradient sums) from call to call without clearing them. A call on NaN inputs
    fills every block it takes with NaN; the calls after it, at the same and at a
    smaller shape, still match the NumPy reference and autodiff."""
    monkeypatch.setenv("JAXSEQ_NATIVE_THREADS", "2")
    for batch, hidden in ((24, 40), (5, 16), (24, 40)):  # batch split; units split
        inputs, lengths = _inputs(hidden, (batch,)), _lengths((batch,))
        poisoned = jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), inputs)
        run = jax.jit(_grads_function(hidden, THREAD_LABELS, **NATIVE))
        assert np.isnan(run(poisoned, lengths)["lstm", "lengths"][1][0].w_h).all()
        actual = run(inputs, lengths)
        expected = _autodiff_grads(hidden, (batch,), THREAD_LABELS)
        for name in NAMES:
            outputs, grads = actual[name, "lengths"]
            _assert_matches_reference(name, outputs, inputs, lengths, "lengths")
            _assert_grads_close(grads, expected[name, "lengths"][1])


@pytest.mark.parametrize("name", NAMES)
def test_backward_writes_its_gradients_over_the_residuals(name):
    """∂z takes the activations' buffer; GRU's ∂(h U_n + b_hn) takes the one it came from."""
    inputs, lengths = _inputs(H, (B,)), _lengths((B,))
    run = _grads_function(H, ("plain",), names=(name,), **NATIVE)
    lowered = jax.jit(run).lower(inputs, lengths)
    (call,) = [line for line in lowered.as_text().splitlines() if "jaxseq_rnn_backward" in line]
    alias = "output_operand_alias<output_tuple_indices = [{}], operand_index = {},"
    assert alias.format(0, 1) in call, call
    assert (alias.format(1, 3) in call) == (name == "gru"), call
    _, grads = lowered.compile()(inputs, lengths)[name, "plain"]
    _assert_grads_close(grads, _autodiff_grads(H, (B,), ("plain",))[name, "plain"][1])


# --------------------------------------------------------- batch and vmap


@pytest.mark.parametrize("batch_shape", [(2, 3), ()], ids=["batch_2x3", "unbatched"])
def test_batch_shapes(batch_shape):
    """xs `[T, 2, 3, D]` (lengths `[2, 3]`) and `[T, D]`: values per example and gradients."""
    hidden = 8
    inputs, lengths = _inputs(hidden, batch_shape), _lengths(batch_shape)
    labels = ("lengths_reverse",)
    actual = jax.jit(_grads_function(hidden, labels, **NATIVE))(inputs, lengths)
    expected = _autodiff_grads(hidden, batch_shape, labels)
    for name in NAMES:
        for label in labels:
            outputs, grads = actual[name, label]
            chex.assert_shape(outputs[1], (T, *batch_shape, hidden))
            chex.assert_shape(jax.tree.leaves(outputs[0]), (*batch_shape, hidden))
            _assert_matches_reference(name, outputs, inputs, lengths, label)
            _assert_grads_close(grads, expected[name, label][1])


@functools.cache
def _vmapped_native_grads():
    """Two parameter sets per cell (seeds 0 and 2) through one `vmap` of the native gradients."""
    inputs, lengths = _inputs(H, (B,)), _lengths((B,))
    others = _inputs(H, (B,), seed=2)
    stacked = {
        name: (jax.tree.map(lambda a, b: jnp.stack([a, b]), params, others[name][0]), *rest)
        for name, (params, *rest) in inputs.items()
    }
    axes = {name: (0, None, None, None) for name in NAMES}  # only the params are mapped
    run = jax.vmap(_grads_function(H, ("lengths_reverse",), **NATIVE), in_axes=(axes, None))
    return jax.jit(run)(stacked, lengths), others


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_parameter_sets(name):
    """Each parameter set under `vmap` gets its own values and gradients."""
    results, others = _vmapped_native_grads()
    outputs, grads = results[name, "lengths_reverse"]
    inputs, lengths = _inputs(H, (B,)), _lengths((B,))
    _, xs, carry, weights = inputs[name]
    for k, params_k in enumerate([inputs[name][0], others[name][0]]):
        one = {**inputs, name: (params_k, xs, carry, weights)}
        _assert_matches_reference(
            name, jax.tree.map(lambda a: a[k], outputs), one, lengths, "lengths_reverse"
        )
        expected = _autodiff(H, (B,), tuple(OPTIONS))(one, lengths)[name, "lengths_reverse"][1]
        # the gradients w.r.t. xs and carry are per parameter set too
        _assert_grads_close(jax.tree.map(lambda a: a[k], grads), expected)


def test_bfloat16_inputs_to_float32_params():
    """xs of another float dtype are cast to float32; their gradient comes back in that dtype."""
    cell = _cell("lstm")
    params, xs, carry, weights = _inputs(H, (B,))["lstm"]
    xs16 = xs.astype(jnp.bfloat16)

    @jax.jit
    def run(xs):
        def loss(xs):
            return _loss(cell, params, xs, carry, weights, None, False, NATIVE)

        return jax.grad(loss, has_aux=True)(xs)

    assert CUSTOM_CALL in run.lower(xs16).as_text()
    d_xs, (final, ys) = run(xs16)
    expected_final, expected_ys = _reference(
        "lstm", params, xs16.astype(jnp.float32), carry, None, False
    )
    np.testing.assert_allclose(ys, expected_ys, **VALUE_TOL)
    np.testing.assert_allclose(final.h, expected_final[0], **VALUE_TOL)
    assert d_xs.dtype == jnp.bfloat16
    # against autodiff at the float32 inputs: xs16 differs from them by bfloat16 rounding
    _, (_, expected_d_xs, _) = _autodiff_grads(H, (B,))["lstm", "plain"]
    _assert_grads_close(d_xs.astype(jnp.float32), expected_d_xs, rtol=3e-2)


# ---------------------------------------------------------------- routing


def _lowered(cell, params, xs, carry=None, grad: bool = False, **options) -> str:
    def run(params, xs, carry):
        return jaxseq.unroll(cell, params, xs, carry, **options)

    if grad:
        forward = run

        def run(params, xs, carry):
            return jax.grad(lambda p: jnp.sum(forward(p, xs, carry)[1]))(params)

    return jax.jit(run).lower(params, xs, carry).as_text()


def _routing_args(cell, dtype=jnp.float32):
    rng = np.random.default_rng(3)
    params = _params(cell, rng)
    xs = jnp.asarray(rng.standard_normal((T, B, D)), dtype)
    return params, xs


@pytest.mark.parametrize("name", NAMES)
def test_auto_uses_the_kernel_for_standard_float32_cells(name):
    cell = _cell(name)
    params, xs = _routing_args(cell)
    text = _lowered(cell, params, xs, grad=True, lengths=jnp.asarray(_lengths((B,))))
    assert CUSTOM_CALL in text
    assert "jaxseq_rnn_backward" in text
    assert "stablehlo.while" not in text  # no scan left: the kernel replaced it


NOT_NATIVE = {  # label: (cell factory, unroll options)
    "kernel_xla": (lambda: jaxseq.lstm(16), dict(kernel="xla")),
    "hidden_12": (lambda: jaxseq.lstm(12), {}),
    "peephole": (lambda: jaxseq.lstm(16, peephole=True), {}),
    "coupled": (lambda: jaxseq.lstm(16, coupled=True), {}),
    "no_forget_gate": (lambda: jaxseq.lstm(16, forget_gate=False), {}),
    "hard_sigmoid": (lambda: jaxseq.lstm(16, gate_activation="hard_sigmoid"), {}),
    "compute_bfloat16": (lambda: jaxseq.lstm(16, compute_dtype=jnp.bfloat16), {}),
    "gru_reset_before": (lambda: jaxseq.gru(16, reset_after=False), {}),
    "gru_no_reset_gate": (lambda: jaxseq.gru(16, reset_gate=False), {}),
    "gru_relu": (lambda: jaxseq.gru(16, activation="relu"), {}),
    "elman_relu": (lambda: jaxseq.elman(16, activation="relu"), {}),
    "bptt_autodiff": (lambda: jaxseq.lstm(16), dict(bptt="autodiff")),
    "remat": (lambda: jaxseq.lstm(16), dict(remat=True)),
    "truncate": (lambda: jaxseq.lstm(16), dict(truncate=2)),
}


@pytest.mark.parametrize("label", NOT_NATIVE)
def test_auto_does_not_use_the_kernel(label):
    factory, options = NOT_NATIVE[label]
    cell = factory()
    params, xs = _routing_args(cell)
    assert CUSTOM_CALL not in _lowered(cell, params, xs, grad=True, **options)


def test_auto_does_not_use_the_kernel_in_float64():
    with jax.enable_x64(True):
        cell = jaxseq.lstm(16, dtype=jnp.float64)
        params, xs = _routing_args(cell, jnp.float64)
        assert native.reason_not(cell, params, xs, cell.initial_carry(params, (B,))) is not None
        assert CUSTOM_CALL not in _lowered(cell, params, xs)
        # float32 params under x64 still run natively
        cell = _cell("lstm")
        params, xs = _routing_args(cell)
        assert CUSTOM_CALL in _lowered(cell, params, xs)


# ----------------------------------------------------------------- errors

REJECTED = {  # label: (cell factory, unroll options, the reason the message must name)
    "hidden_12": (lambda: jaxseq.lstm(12), {}, "hidden_size=12 is not a multiple of 8"),
    "peephole": (lambda: jaxseq.lstm(16, peephole=True), {}, "has no native kernel"),
    "hard_sigmoid": (
        lambda: jaxseq.lstm(16, gate_activation="hard_sigmoid"),
        {},
        "has no native kernel",
    ),
    "elman_relu": (lambda: jaxseq.elman(16, activation="relu"), {}, "has no native kernel"),
    "compute_bfloat16": (
        lambda: jaxseq.gru(16, compute_dtype=jnp.bfloat16),
        {},
        "compute_dtype=bfloat16",
    ),
    "bptt_autodiff": (lambda: jaxseq.lstm(16), dict(bptt="autodiff"), "bptt='autodiff'"),
    "remat": (lambda: jaxseq.gru(16), dict(remat=True), "remat=True"),
    "truncate": (lambda: jaxseq.elman(16), dict(truncate=3), "truncate=3"),
    "method_deer": (lambda: jaxseq.lstm(16), dict(method="deer"), "method='deer'"),
    "method_associative": (
        lambda: jaxseq.cells.mingru(16),
        dict(method="associative"),
        "method='associative'",
    ),
}


@pytest.mark.parametrize("label", REJECTED)
def test_kernel_native_names_why_it_cannot_run(label):
    factory, options, reason = REJECTED[label]
    cell = factory()
    params, xs = _routing_args(cell)
    with pytest.raises(ValueError, match=re.escape(reason)):
        jaxseq.unroll(cell, params, xs, kernel="native", **options)


def test_kernel_native_names_why_for_a_cell_without_recurrent_matmul():
    cell = jaxseq.gru(16, reset_after=False)
    params, xs = _routing_args(cell)
    with pytest.raises(ValueError, match="native kernel"):
        jaxseq.unroll(cell, params, xs, kernel="native")


def test_kernel_native_rejects_float64():
    with jax.enable_x64(True):
        cell = jaxseq.lstm(16, dtype=jnp.float64)
        params, xs = _routing_args(cell, jnp.float64)
        with pytest.raises(ValueError, match="params and carry must be float32"):
            jaxseq.unroll(cell, params, xs, kernel="native")


def test_kernel_native_rejects_an_empty_batch():
    cell = _cell("gru")
    params, xs = _routing_args(cell)
    with pytest.raises(ValueError, match="empty batch"):
        jaxseq.unroll(cell, params, xs[:, :0], kernel="native")


def test_unknown_kernel_is_rejected():
    cell = _cell("lstm")
    params, xs = _routing_args(cell)
    with pytest.raises(ValueError, match=r"kernel must be one of \('auto', 'native', 'xla'\)"):
        jaxseq.unroll(cell, params, xs, kernel="bogus")


# ------------------------------------------------------------------ edges


@pytest.mark.parametrize("name", NAMES)
def test_zero_steps_return_the_initial_carry(name):
    """T = 0 (natively and by XLA): the carry comes back, ys is empty, gradients are zero."""
    cell = _cell(name)
    params, xs, carry, _ = _inputs(H, (B,))[name]
    for lengths, kernel in ((None, "native"), (np.zeros((B,), np.int32), "native"), (None, "xla")):
        final, ys = jaxseq.unroll(cell, params, xs[:0], carry, lengths=lengths, kernel=kernel)
        chex.assert_shape(ys, (0, B, H))
        assert ys.dtype == jnp.float32
        chex.assert_trees_all_equal(final, carry)
    grads = jax.grad(
        lambda p, c: jnp.sum(jax.tree.leaves(jaxseq.unroll(cell, p, xs[:0], c, **NATIVE)[0])[0]),
        argnums=(0, 1),
    )(params, carry)
    chex.assert_trees_all_equal(grads[0], jax.tree.map(jnp.zeros_like, params))
    np.testing.assert_array_equal(jax.tree.leaves(grads[1])[0], np.ones((B, H), np.float32))


FALLBACKS = {  # label: (environment, the reason status() and kernel="native" give)
    "disabled": (dict(JAXSEQ_NATIVE="0"), "disabled by JAXSEQ_NATIVE=0"),
    "compiler_fails": (dict(CXX="false"), "the kernel could not be built or loaded"),
}


@pytest.mark.parametrize("label", FALLBACKS)
def test_falls_back_to_xla(label, tmp_path):
    """Disabled, or a compiler that fails (with an empty cache): status says why, auto uses
    XLA, native raises with the same reason."""
    extra, reason = FALLBACKS[label]
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np
        import jaxseq
        from jaxseq import native
        print(native.status())
        cell = jaxseq.lstm(8)
        params = jax.tree.map(lambda s: jnp.full(s.shape, 0.1, s.dtype),
                              jax.eval_shape(lambda k: cell.init(k, 2), jax.random.key(0)))
        xs = jnp.ones((3, 2, 2), jnp.float32)
        run = jax.jit(lambda p, x: jaxseq.unroll(cell, p, x))
        print("custom call" if "jaxseq_rnn" in run.lower(params, xs).as_text() else "xla")
        try:
            jaxseq.unroll(cell, params, xs, kernel="native")
        except ValueError as error:
            print(error)
        try:
            native.fma_probe(1)
        except RuntimeError as error:
            print(error)
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAXSEQ_CACHE_DIR=str(tmp_path), **extra)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("(False, ") and reason in lines[0], lines[0]
    assert lines[1] == "xla"
    assert reason in lines[2], lines[2]
    assert lines[3].startswith("jaxseq.native cannot run here") and reason in lines[3], lines[3]
    assert not list(tmp_path.glob("*.so"))  # nothing built


@pytest.mark.parametrize(("threads", "isa", "lanes"), [("1", "avx2", 8), ("2", None, None)])
def test_fma_probe_counts_the_flops_of_every_thread(threads, isa, lanes, monkeypatch):
    """12 vector FMAs (2 FLOPs a lane) per round on each kernel thread, at isa()'s width."""
    monkeypatch.setenv("JAXSEQ_NATIVE_THREADS", threads)
    if isa:
        monkeypatch.setenv("JAXSEQ_NATIVE_ISA", isa)
    lanes = lanes or {"avx512": 16, "avx2": 8}[native.isa()]
    assert native.fma_probe(1000) == int(threads) * 1000 * 12 * lanes * 2


@pytest.mark.parametrize("rounds", [0, -3, 2.5, True, "4"])
def test_fma_probe_names_bad_rounds(rounds):
    with pytest.raises(ValueError, match=f"rounds must be a positive integer, got {rounds!r}"):
        native.fma_probe(rounds)


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_thread_count_is_named(value, monkeypatch):
    monkeypatch.setenv("JAXSEQ_NATIVE_THREADS", value)
    cell = _cell("lstm")
    params, xs = _routing_args(cell)
    with pytest.raises(ValueError, match="JAXSEQ_NATIVE_THREADS must be a positive integer"):
        jax.jit(lambda p, x: jaxseq.unroll(cell, p, x, kernel="native")[1])(params, xs)


def test_scan_rejects_what_unroll_would_not_run_natively():
    """`native.scan` called directly names the reason, as `kernel="native"` does."""
    cell = jaxseq.lstm(12)
    params = cell.init(jax.random.key(0), D)
    xs = jnp.ones((3, 2, D), jnp.float32)
    carry = cell.initial_carry(params, (2,))
    with pytest.raises(ValueError, match="hidden_size=12 is not a multiple of 8"):
        jaxseq.native.scan(cell, params, xs, carry, None, False)


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs a process that may run on 2 CPUs or more",
)
def test_helper_threads_keep_off_the_callers_cpu(monkeypatch):
    """The pool's helper may run on every CPU of the process but the one its caller is
    on (woken on the caller's CPU, it waited behind the caller: README, "Speed"). Linux
    shows each thread's mask in /proc; the helpers are the threads whose mask lacks
    exactly one of the process's CPUs."""
    monkeypatch.setenv("JAXSEQ_NATIVE_THREADS", "2")
    allowed = os.sched_getaffinity(0)
    hidden, batch = 16, 9  # rows 4 + 5: the pool's helper runs one of the parts
    inputs, lengths = _inputs(hidden, (batch,)), _lengths((batch,))
    run = jax.jit(_grads_function(hidden, THREAD_LABELS, **NATIVE)).lower(inputs, lengths)
    assert "threads = 2 : i64" in run.as_text()
    jax.block_until_ready(run.compile()(inputs, lengths))
    masks = []
    for task in os.listdir("/proc/self/task"):
        try:
            masks.append(os.sched_getaffinity(int(task)))
        except OSError:  # a thread that ended meanwhile
            continue
    narrowed = [mask for mask in masks if mask != allowed]
    assert narrowed, "no thread's mask leaves out the caller's CPU"
    assert all(mask < allowed and len(allowed - mask) == 1 for mask in narrowed), narrowed


def test_large_training_step_in_huge_pages_matches_references():
    """A training step whose residuals pass glibc's 32 MiB mmap threshold (the forward
    kernel then asks for 2 MiB pages for them, `advise_huge_pages` in rnn_cpu.cc):
    outputs equal the NumPy loop's, gradients JAX autodiff's of the XLA scan."""
    hidden, batch, steps = 256, (16,), 520  # 520·16·(7·256 + 3)·4 B = 57 MiB saved (LSTM)
    inputs = {"lstm": _inputs(hidden, batch, steps=steps)["lstm"]}
    lengths = _lengths(batch, steps)
    grads = {
        kernel: jax.jit(_grads_function(hidden, ("plain",), ("lstm",), **kwargs))
        for kernel, kwargs in (("native", NATIVE), ("autodiff", AUTODIFF))
    }
    lowered = grads["native"].lower(inputs, lengths)
    assert CUSTOM_CALL in lowered.as_text()
    outputs, actual = lowered.compile()(inputs, lengths)["lstm", "plain"]
    _assert_matches_reference("lstm", outputs, inputs, lengths, "plain")
    _assert_grads_close(actual, grads["autodiff"](inputs, lengths)["lstm", "plain"][1])
