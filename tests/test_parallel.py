"""Parallel-in-time evaluators: `unroll(method="associative" | "deer")` and `jaxseq.parallel`.

Values are checked against the float64 NumPy reference (numpy_reference.py, written
from the equations) and gradients against `jax.grad` of the plain sequential scan,
with lengths and reverse. XLA compilation dominates the runtime, so every method
and variant of one cell is compiled into a single jitted call, cached and shared.
"""

import functools
import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference
import pytest

import jaxseq
from benchmarks import parallel_scan
from jaxseq import parallel
from jaxseq.cells import lru, mingru, minlstm
from jaxseq.cells.lru import LRUCarry, LRUParams, ring_init

T, IN, H, B = 9, 3, 4, 3
LENGTHS = np.array([T, 4, 0], np.int32)
LINEAR = {
    "mingru": mingru(H),
    "minlstm": minlstm(H),
    "lru": lru(H, r_min=0.5, r_max=0.95),
}
NONLINEAR = {"elman": jaxseq.elman(H), "gru": jaxseq.gru(H), "lstm": jaxseq.lstm(H)}
CELLS = LINEAR | NONLINEAR
REFERENCE = {name: numpy_reference.STEPS[name] for name in CELLS}
VARIANTS = {  # (reverse, with lengths)
    "forward": (False, False),
    "reverse": (True, False),
    "lengths": (False, True),
    "lengths_reverse": (True, True),
}
DEER_TOL = 1e-6  # tighter than the default, so the diagonal variant's last iterate is ~1e-7 off
VALUES = dict(atol=1e-5, rtol=1e-5)
GRADS = dict(atol=2e-5, rtol=1e-4)


_POOL = functools.cache(
    lambda: 0.3 * np.asarray(jax.random.normal(jax.random.key(0), (4096,)), np.float32)
)


def _draw(offset: int, shape: tuple[int, ...]) -> np.ndarray:
    """N(0, 0.3²) entries cut from one fixed draw (each new `jax.random` shape compiles)."""
    return _POOL()[offset : offset + math.prod(shape)].reshape(shape)


@functools.cache
def _setup(name: str):
    """Params of `init`'s structure with N(0, 0.3²) entries, a non-zero carry, inputs `[T, B, IN]`.

    Not from `init` itself: eager `init` compiles op by op (seconds); every entry is
    random, so zero-initialised biases matter too.
    """
    cell = CELLS[name]
    shapes = jax.eval_shape(lambda k: cell.init(k, IN), jax.random.key(0))
    carry_shapes = jax.eval_shape(lambda p: cell.initial_carry(p, (B,)), shapes)
    leaves, tree = jax.tree.flatten((shapes, carry_shapes))
    offsets = np.cumsum([0] + [leaf.size for leaf in leaves])
    params, carry = jax.tree.unflatten(
        tree, [jnp.asarray(_draw(int(o), a.shape)) for o, a in zip(offsets, leaves)]
    )
    xs = jnp.asarray(3.0 * _draw(int(offsets[-1]), (T, B, IN)))
    return params, xs, carry


def _loss_of(carry, ys) -> jax.Array:
    """A scalar that depends non-linearly on every output and every carry leaf."""
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(carry))


def _loss_and_outputs(run, params, xs, carry):
    outputs = run(params, xs, carry)
    return _loss_of(*outputs), outputs


def _evaluate(cell, method: str, variants, grad_variants, **options):
    """A jitted `(params, xs, carry, lengths) -> {(variant, method): (outputs, grads or None)}`.

    Outputs for every variant; gradients wrt (params, xs, carry) for `grad_variants`,
    also of the sequential scan (key `(variant, "scan")`) as their reference.
    """

    def run(params, xs, carry, lengths):
        out = {}
        for variant in variants:
            reverse, with_lengths = VARIANTS[variant]
            methods = [(method, options)] + ([("scan", {})] if variant in grad_variants else [])
            for m, opts in methods:
                run_m = functools.partial(
                    jaxseq.unroll,
                    cell,
                    lengths=lengths if with_lengths else None,
                    reverse=reverse,
                    method=m,
                    **opts,
                )
                if variant in grad_variants:
                    grad = jax.grad(_loss_and_outputs, argnums=(1, 2, 3), has_aux=True)
                    grads, outputs = grad(run_m, params, xs, carry)
                else:
                    grads, outputs = None, run_m(params, xs, carry)
                out[variant, m] = (outputs, grads)
        return out

    return jax.jit(run)


@functools.cache
def _results(name: str, method: str, exhaustive: bool = False, **options) -> dict:
    """Outputs and gradients for every variant, or (fast) outputs for "reverse" (associative
    only: DEER shares its flip) and both for "lengths_reverse"."""
    fast = ("reverse", "lengths_reverse") if method == "associative" else ("lengths_reverse",)
    variants = VARIANTS if exhaustive else fast
    grad_variants = variants if exhaustive else ("lengths_reverse",)
    run = _evaluate(CELLS[name], method, variants, grad_variants, **options)
    return jax.tree.map(np.asarray, run(*_setup(name), LENGTHS))


def _reference(name: str, variant: str):
    reverse, with_lengths = VARIANTS[variant]
    params, xs, carry = jax.tree.map(np.asarray, _setup(name))
    lengths = LENGTHS if with_lengths else None
    return numpy_reference.unroll(
        REFERENCE[name], params, xs, carry, lengths=lengths, reverse=reverse
    )


def _assert_matches_reference(actual, expected):
    for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(got, np.float64), want, **VALUES)


def _assert_grads_match_scan(results, variant, method):
    grads, expected = results[variant, method][1], results[variant, "scan"][1]
    chex.assert_trees_all_close(grads, expected, **GRADS)
    assert max(np.abs(leaf).max() for leaf in jax.tree.leaves(expected)) > 1e-2  # not vacuous


# --- associative scan -------------------------------------------------------------------------

linear_cells = pytest.mark.parametrize("name", LINEAR)
# minlstm shares minGRU's code path (`recur` is built from the same `coefficients`): slow only.
fast_linear = pytest.mark.parametrize("name", ["mingru", "lru"])
fast_variants = pytest.mark.parametrize("variant", ["reverse", "lengths_reverse"])


@fast_linear
@fast_variants
def test_associative_matches_numpy_reference(name, variant):
    actual = _results(name, "associative")[variant, "associative"][0]
    _assert_matches_reference(actual, _reference(name, variant))


@fast_linear
def test_associative_gradients_match_the_sequential_scan(name):
    _assert_grads_match_scan(_results(name, "associative"), "lengths_reverse", "associative")


@pytest.mark.slow
@linear_cells
@pytest.mark.parametrize("variant", VARIANTS)
def test_associative_every_variant_exhaustively(name, variant):
    results = _results(name, "associative", exhaustive=True)
    _assert_matches_reference(results[variant, "associative"][0], _reference(name, variant))
    _assert_grads_match_scan(results, variant, "associative")


def _row(tree, b):
    return jax.tree.map(lambda a: a[b], tree)


def test_lengths_freeze_the_carry_and_zero_the_outputs():
    (carry, ys), _ = _results("lru", "associative")["lengths_reverse", "associative"]
    carry_0 = jax.tree.map(np.asarray, _setup("lru")[2])
    chex.assert_trees_all_equal(_row(carry, 2), _row(carry_0, 2))  # length 0
    np.testing.assert_array_equal(ys[4:, 1], 0.0)
    np.testing.assert_array_equal(ys[:, 2], 0.0)


_linear_scan = jax.jit(parallel.linear_scan, static_argnames="reverse")


def test_linear_scan_equals_a_python_loop():
    a, b = _draw(0, (T, 2, 3)), _draw(100, (T, 2, 3))
    h, expected = np.zeros((2, 3)), np.zeros((T, 2, 3))
    for t in range(T):
        h = a[t] * h + b[t]
        expected[t] = h
    np.testing.assert_allclose(_linear_scan(a, b), expected, **VALUES)
    h, expected = np.zeros((2, 3)), np.zeros((T, 2, 3))
    for t in reversed(range(T)):
        h = a[t] * h + b[t]
        expected[t] = h
    np.testing.assert_allclose(_linear_scan(a, b, reverse=True), expected, **VALUES)


def test_matrix_scan_equals_a_python_loop():
    a, b = _draw(0, (T, 2, 3, 3)), _draw(200, (T, 2, 3))
    h, expected = np.zeros((2, 3)), np.zeros((T, 2, 3))
    for t in range(T):
        h = np.einsum("bij,bj->bi", a[t], h) + b[t]
        expected[t] = h
    np.testing.assert_allclose(jax.jit(parallel.matrix_scan)(a, b), expected, **VALUES)


# --- DEER ---------------------------------------------------------------------------------------

nonlinear_cells = pytest.mark.parametrize("name", NONLINEAR)
FAST_DEER = [("lstm", "full"), ("gru", "diag")]  # both carry kinds, both backward passes
fast_deer = pytest.mark.parametrize(("name", "jacobian"), FAST_DEER)


def _deer_results(name: str, jacobian: str, exhaustive: bool = False) -> dict:
    options = dict(deer_jacobian=jacobian, deer_tol=DEER_TOL, deer_iters=T)
    return _results(name, "deer", exhaustive, **options)


@fast_deer
def test_deer_matches_numpy_reference(name, jacobian):
    actual = _deer_results(name, jacobian)["lengths_reverse", "deer"][0]
    _assert_matches_reference(actual, _reference(name, "lengths_reverse"))


@fast_deer
def test_deer_gradients_match_the_sequential_scan(name, jacobian):
    _assert_grads_match_scan(_deer_results(name, jacobian), "lengths_reverse", "deer")


@pytest.mark.slow
@nonlinear_cells
@pytest.mark.parametrize("jacobian", ["full", "diag"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_deer_every_variant_exhaustively(name, jacobian, variant):
    results = _deer_results(name, jacobian, exhaustive=True)
    _assert_matches_reference(results[variant, "deer"][0], _reference(name, variant))
    _assert_grads_match_scan(results, variant, "deer")


@functools.cache
def _deer_info(name: str, jacobian: str):
    """`parallel.deer` run to convergence, stopped after 2 iterations, and falling back."""
    cell = CELLS[name]
    deer = functools.partial(parallel.deer, cell, jacobian=jacobian, tol=DEER_TOL)

    @jax.jit
    def run(params, xs, carry, lengths):
        return {
            "converged": deer(params, xs, carry, lengths=lengths, max_iters=T, fallback=False),
            "two_steps": deer(params, xs, carry, lengths=lengths, max_iters=2, fallback=False),
            "fallback": deer(params, xs, carry, lengths=lengths, max_iters=1),
        }

    return jax.tree.map(np.asarray, run(*_setup(name), LENGTHS))


info_configs = pytest.mark.parametrize(
    ("name", "jacobian"), [("gru", "diag"), pytest.param("lstm", "full", marks=pytest.mark.slow)]
)


@info_configs
def test_deer_reports_convergence_within_T_iterations(name, jacobian):
    carry, ys, info = _deer_info(name, jacobian)["converged"]
    assert info.converged and not info.fell_back
    assert 1 < info.iterations <= T
    assert info.error <= DEER_TOL
    _assert_matches_reference((carry, ys), _reference(name, "lengths"))


@info_configs
def test_deer_makes_the_first_k_steps_exact_after_k_iterations(name, jacobian):
    """Newton on a recurrence from a known h_0: iteration k fixes step k (hence ≤ T iterations)."""
    _, ys, info = _deer_info(name, jacobian)["two_steps"]
    assert info.iterations == 2 and not info.converged and not info.fell_back
    _, expected = _reference(name, "lengths")
    np.testing.assert_allclose(ys[:2], expected[:2], **VALUES)
    assert np.abs(ys[2:] - expected[2:]).max() > 1e-6  # the rest is not there yet


@info_configs
def test_deer_falls_back_to_the_sequential_scan(name, jacobian):
    carry, ys, info = _deer_info(name, jacobian)["fallback"]
    assert info.iterations == 1 and not info.converged and info.fell_back
    _assert_matches_reference((carry, ys), _reference(name, "lengths"))


# --- vmap -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "method"),
    [("lru", "associative"), pytest.param("gru", "deer", marks=pytest.mark.slow)],
)
def test_vmap_over_examples(name, method):
    params, xs, carry = _setup(name)
    run = functools.partial(jaxseq.unroll, CELLS[name], params, method=method)
    per_example = jax.vmap(
        lambda x, c, length: run(x, c, lengths=length), in_axes=(1, 0, 0), out_axes=(0, 1)
    )
    _assert_matches_reference(jax.jit(per_example)(xs, carry, LENGTHS), _reference(name, "lengths"))


# --- the new cells ----------------------------------------------------------------------------


def test_lru_known_values():
    """Hard-coded from numpy_reference.lru_step (complex128) with these weights."""
    params = LRUParams(
        nu_log=jnp.array([-1.0, 0.5]),
        theta_log=jnp.array([0.2, -1.5]),
        gamma_log=jnp.array([-0.3, -0.1]),
        b_re=jnp.array([[0.5, -0.2], [0.1, 0.4]]),
        b_im=jnp.array([[-0.3, 0.2], [0.6, -0.1]]),
        c_re=jnp.array([[0.7, -0.4], [0.2, 0.3]]),
        c_im=jnp.array([[0.1, 0.5], [-0.6, 0.2]]),
        d=jnp.array([[0.2, 0.0], [-0.1, 0.3]]),
    )
    xs = jnp.array([[1.0, -1.0], [0.5, 0.25], [-0.3, 0.8]])
    expected_ys = [[0.62839299, -0.3023237], [0.60155553, -0.27853833], [-0.16825071, -0.12436614]]
    expected_carry = LRUCarry(
        re=np.array([0.09321814, 0.31850913]), im=np.array([0.89068758, -0.11356079])
    )
    final, ys = jax.jit(functools.partial(jaxseq.unroll, lru(2)))(params, xs)
    chex.assert_trees_all_close((final, ys), (expected_carry, np.array(expected_ys)), atol=1e-6)
    zeros = (np.zeros(2), np.zeros(2))
    reference = numpy_reference.unroll(numpy_reference.lru_step, params, np.asarray(xs), zeros)
    chex.assert_trees_all_close(
        reference, (tuple(expected_carry), np.array(expected_ys)), atol=1e-8
    )


def _check_ring(params: LRUParams, r_min: float, r_max: float, max_phase: float) -> None:
    """|λ| in [r_min, r_max] with |λ|² uniform, arg λ uniform in [0, max_phase], γ = √(1 − |λ|²)."""
    nu, theta = (np.asarray(v, np.float64) for v in (params.nu_log, params.theta_log))
    modulus, phase = np.exp(-np.exp(nu)), np.exp(theta)  # λ = exp(−exp(ν) + i exp(θ))
    assert np.all((modulus >= r_min - 1e-6) & (modulus <= r_max + 1e-6))
    assert np.all((phase >= 0.0) & (phase <= max_phase * (1 + 1e-6)))
    gamma = np.exp(np.asarray(params.gamma_log, np.float64))
    np.testing.assert_allclose(gamma, np.sqrt(1.0 - modulus**2), rtol=1e-3, atol=1e-6)
    # Uniform on the ring: |λ|² ~ U(r_min², r_max²), phase ~ U(0, max_phase); 5 standard errors.
    n = modulus.size
    for sample, low, high in [(modulus**2, r_min**2, r_max**2), (phase, 0.0, max_phase)]:
        standard_error = (high - low) / math.sqrt(12 * n)
        assert abs(sample.mean() - (low + high) / 2) < 5 * standard_error
        assert abs(np.quantile(sample, 0.25) - (0.75 * low + 0.25 * high)) < 0.05 * (high - low)


@pytest.mark.parametrize(
    ("r_min", "r_max", "max_phase"),
    [(0.9, 0.999, 0.3), pytest.param(0.0, 1.0, 2 * math.pi, marks=pytest.mark.slow)],
)
def test_ring_init_draws_lambda_uniformly_on_the_ring(r_min, r_max, max_phase):
    ring = functools.partial(ring_init, state_size=4096, r_min=r_min, r_max=r_max)
    nu_log, theta_log, gamma_log = jax.jit(ring, static_argnames="max_phase")(
        jax.random.key(0), max_phase=max_phase
    )
    stub = LRUParams(nu_log, theta_log, gamma_log, *([None] * 5))
    _check_ring(stub, r_min, r_max, max_phase)


@pytest.mark.slow
def test_lru_init_uses_the_ring():
    cell = lru(1, state_size=4096, r_min=0.4, r_max=0.6, max_phase=1.0)
    params = jax.jit(cell.init, static_argnums=1)(jax.random.key(1), 3)
    _check_ring(params, 0.4, 0.6, 1.0)
    chex.assert_shape((params.b_re, params.c_re, params.d), [(3, 4096), (4096, 1), (3, 1)])
    b_std = np.asarray(params.b_re).std()
    assert abs(b_std - 1 / math.sqrt(2 * 3)) < 0.05 * b_std  # N(0, 1/(2·in)), Orvieto et al.


# --- errors -------------------------------------------------------------------------------------


def _params_xs(name: str):
    cell = CELLS[name]
    params = jax.eval_shape(lambda k: cell.init(k, IN), jax.random.key(0))
    return cell, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), params), jnp.ones((T, B, IN))


def test_associative_needs_a_linear_cell():
    cell, params, xs = _params_xs("lstm")
    message = (
        r"method='associative' needs a cell whose step is an elementwise linear recurrence "
        r"\(cell.linear, as in mingru, minlstm and lru\); lstm\(hidden_size=4.*\) has "
        r"cell.linear=None: use method='scan' or method='deer'"
    )
    with pytest.raises(ValueError, match=message):
        jaxseq.unroll(cell, params, xs, method="associative")
    with pytest.raises(ValueError, match=message):  # at trace time, under jit
        jax.jit(functools.partial(jaxseq.unroll, cell, method="associative"))(params, xs)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            dict(method="parallel"),
            ValueError,
            r"method must be one of \('scan', 'associative', 'deer'\), got 'parallel'",
        ),
        (
            dict(method="deer", deer_jacobian="dense"),
            ValueError,
            r"deer_jacobian must be one of \('full', 'diag'\), got 'dense'",
        ),
        (
            dict(method="deer", deer_iters=0),
            ValueError,
            r"deer_iters must be a positive int, got 0",
        ),
        (
            dict(method="deer", deer_tol=-1e-3),
            ValueError,
            r"deer_tol must be a positive float, got -0.001",
        ),
        (
            dict(method="deer", truncate=2),
            ValueError,
            r"unroll, remat and truncate are options of method='scan', got method='deer' "
            r"with unroll=1, remat=False, truncate=2",
        ),
        (
            dict(method="associative", remat=True),
            ValueError,
            r"got method='associative' with unroll=1, remat=True",
        ),
    ],
    ids=["method", "jacobian", "iters", "tol", "truncate", "remat"],
)
def test_bad_method_options(options, error, message):
    cell, params, xs = _params_xs("mingru")
    with pytest.raises(error, match=message):
        jaxseq.unroll(cell, params, xs, **options)


def test_deer_fallback_must_be_a_bool():
    cell, params, xs = _params_xs("gru")
    with pytest.raises(TypeError, match=r"fallback must be a bool, got 'yes'"):
        parallel.deer(cell, params, xs, fallback="yes")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            dict(r_min=0.5, r_max=0.5),
            r"r_min and r_max must satisfy 0 <= r_min < r_max <= 1, got r_min=0.5, r_max=0.5",
        ),
        (dict(r_max=1.5), r"got r_min=0.0, r_max=1.5"),
        (dict(max_phase=0.0), r"max_phase must be > 0, got 0.0"),
        (dict(state_size=0), r"state_size must be a positive int, got 0"),
    ],
)
def test_bad_lru_options(options, message):
    with pytest.raises(ValueError, match=message):
        lru(4, **options)


# --- the benchmark script ---------------------------------------------------------------------

BENCH_VARIANTS = {
    "fast": "mingru:scan,mingru:associative,lstm:torch_cudnn,lstm:jax_cudnn",
    "all": parallel_scan.VARIANTS,
}


@pytest.mark.parametrize("variants", ["fast", pytest.param("all", marks=pytest.mark.slow)])
def test_benchmark_smoke_run(variants, tmp_path, capsys):
    out = tmp_path / "parallel_scan.jsonl"
    records = parallel_scan.main(
        ["--smoke", "--precision=default", f"--variants={BENCH_VARIANTS[variants]}", f"--out={out}"]
    )
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == records
    timed = [r for r in records if "skipped" not in r]
    assert ("mingru", "associative") in {(r["cell"], r["method"]) for r in timed}
    for record in timed:
        assert {"T", "B", "D", "H", "device", "jax", "compile_s", "median_ms", "mode"} <= set(
            record
        )
        assert record["median_ms"] > 0
        if record["mode"] == "forward" and record["method"] in ("associative", "deer"):
            assert record["max_abs_diff_vs_scan"] < 1e-4
    for deer in (r for r in timed if r["method"] == "deer"):
        assert deer["deer"]["converged"] and 1 <= deer["deer"]["iterations"] <= 8
    if jax.devices()[0].platform != "gpu":
        assert {r["method"] for r in records if "skipped" in r} == {"torch_cudnn", "jax_cudnn"}
    assert "| T | cell | method |" in capsys.readouterr().out
