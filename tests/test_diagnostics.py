"""jaxseq.diagnostics against brute force (per-step `jax.jacrev`, Python loops, NumPy) and theory.

Brute force: the per-step Jacobians ∂c_t/∂c_{t-1}, ∂c_t/∂x_t and ∂y_t/∂c_t come
from `jax.jacrev` of `cell.step` on one example at a time; everything else (the
BPTT recursion for ∂L/∂c_t, the chain rule for ∂c_final/∂x_t, products, QR,
singular values) is a NumPy loop over t in float64. Theory: a linear RNN has
∂h_{T-1}/∂h_t = (U^{T-1-t})ᵀ exactly (weights right-multiply) and Lyapunov
exponents log |eig U|; a tanh
RNN is bounded by σ_max(U)^{T-1-t}. One jitted function per cell computes
every diagnostic, so each cell compiles once.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference
import pytest
from cells_list import FACTORIES, build, normal
from jax.flatten_util import ravel_pytree

import jaxseq
from jaxseq import diagnostics

T, IN, H, B = 6, 2, 3, 2
LENGTHS = np.array([T, 3], np.int32)  # one full and one padded example
KEY = jax.random.key(0)
WEIGHTS = jnp.asarray(normal(jax.random.fold_in(KEY, 1), (T, B, H)))
XS = jnp.asarray(normal(jax.random.fold_in(KEY, 2), (T, B, IN)))


def _loss(ys):
    return jnp.sum(WEIGHTS * jnp.square(ys))


def _readout(family: str, params, carry, x):
    """y_t as a function of the state after step t (written from the cells' equations)."""
    if family == "lstm":
        return carry.h
    if family == "lru":
        return carry.re @ params.c_re - carry.im @ params.c_im + x @ params.d
    return carry


@functools.cache
def _diagnose(name: str):
    """Every diagnostic of the named cell, in one jitted function."""
    cell, _ = build(name, H)

    def run(params, xs, lengths):
        jac = diagnostics.recurrent_jacobians(cell, params, xs, lengths=lengths)
        return dict(
            grads=diagnostics.state_grad_norms(cell, params, xs, _loss, lengths=lengths),
            sensitivity=diagnostics.input_sensitivity(cell, params, xs, lengths=lengths),
            jacobians=jac,
            spans=diagnostics.jacobian_product_norms(jac),
            singular=diagnostics.jacobian_singular_values(jac),
            lyapunov=diagnostics.lyapunov_exponents(jac, lengths=lengths),
        )

    return jax.jit(run)


def _random_params(cell, key: jax.Array, scale: float = 0.5):
    """Params shaped like `cell.init`'s, every entry N(0, scale²) (no eager init to compile)."""
    leaves, tree = jax.tree.flatten(jax.eval_shape(lambda k: cell.init(k, IN), key))
    keys = [jax.random.fold_in(key, i) for i in range(len(leaves))]
    return jax.tree.unflatten(
        tree, [jnp.asarray(normal(k, a.shape, scale)) for k, a in zip(keys, leaves)]
    )


@functools.cache
def _params(name: str):
    cell, _ = build(name, H)
    return _random_params(cell, jax.random.fold_in(KEY, 3))


@functools.cache
def _results(name: str) -> dict:
    return _diagnose(name)(_params(name), XS, jnp.asarray(LENGTHS))


@functools.cache
def _local(name: str):
    """Brute force of one step for one example: c_t, y_t, ∂c_t/∂c_{t-1}, ∂c_t/∂x_t, ∂y_t/∂c_t."""
    cell, _ = build(name, H)
    family = cell.name.partition("(")[0]

    def local(params, flat_tm1, x_t):
        unravel = ravel_pytree(cell.initial_carry(params, ()))[1]

        def step(c, x):
            return ravel_pytree(cell.step(params, unravel(c), x)[0])[0]

        carry_t, y_t = cell.step(params, unravel(flat_tm1), x_t)
        flat_t = ravel_pytree(carry_t)[0]
        readout = jax.jacrev(lambda c: _readout(family, params, unravel(c), x_t))(flat_t)
        return flat_t, y_t, *jax.jacrev(step, argnums=(0, 1))(flat_tm1, x_t), readout

    return jax.jit(local)


def _brute_force(name: str, params, xs, lengths) -> dict:
    """The diagnostics one example and one step at a time (NumPy float64 after the jacrevs)."""
    cell, _ = build(name, H)
    sizes = [leaf.shape[-1] for leaf in jax.tree.leaves(cell.initial_carry(params, ()))]
    size = sum(sizes)
    out = {k: np.zeros((T, B)) for k in ("grad", "sens", "spans")}
    out["grad_leaves"] = np.zeros((len(sizes), T, B))
    out["jac"] = np.broadcast_to(np.eye(size), (T, B, size, size)).copy()
    out["lyap"] = np.zeros((B, size))
    ys = np.zeros((T, B, H))
    steps = []
    for b in range(B):
        flat = np.zeros(size, np.float32)
        per_step = []
        for t in range(lengths[b]):
            flat, ys[t, b], j_c, j_x, readout = _local(name)(params, flat, xs[t, b])
            per_step.append([np.asarray(a, np.float64) for a in (j_c, j_x, readout)])
        steps.append(per_step)
    grad_y = 2.0 * np.asarray(WEIGHTS, np.float64) * ys  # ∂L/∂y_t for L = Σ W y² (0 if padded)
    for b in range(B):
        length, per_step = lengths[b], steps[b]
        g, product = np.zeros(size), np.eye(size)
        q, log_r = np.eye(size), np.zeros(size)
        for t in range(length - 1, -1, -1):  # backwards: BPTT and products
            j_c, j_x, readout = per_step[t]
            g = readout.T @ grad_y[t, b] + (per_step[t + 1][0].T @ g if t + 1 < length else 0)
            out["grad"][t, b] = np.linalg.norm(g)
            pieces = np.split(g, np.cumsum(sizes)[:-1])
            out["grad_leaves"][:, t, b] = [np.linalg.norm(p) for p in pieces]
            out["sens"][t, b] = np.linalg.norm(product @ j_x)
            out["spans"][t, b] = np.linalg.norm(product, 2)
            out["jac"][t, b] = j_c
            product = product @ j_c
        for t in range(length):  # forwards: QR
            q, r = np.linalg.qr(per_step[t][0] @ q)
            log_r += np.log(np.abs(np.diag(r)))
        out["lyap"][b] = np.sort(log_r / length)[::-1]
    padded = np.arange(T)[:, None] >= lengths[None]  # the identity maps padded steps to the end
    out["spans"][padded] = 1.0
    return out


# A two-leaf carry, and an output that is not a carry leaf (the LRU's readout). The
# one-leaf Elman is checked against theory below; everything here is cell-generic.
BRUTE_FORCE_CELLS = ["lstm_peephole", "lru"]


@pytest.mark.parametrize("name", BRUTE_FORCE_CELLS)
def test_diagnostics_match_brute_force(name):
    got = _results(name)
    want = _brute_force(name, _params(name), XS, LENGTHS)
    close = functools.partial(np.testing.assert_allclose, rtol=2e-4, atol=1e-5)
    close(got["grads"].norm, want["grad"])
    leaves = jax.tree.leaves(got["grads"].leaf_norms)
    close(np.stack(leaves), want["grad_leaves"][: len(leaves)])
    close(got["sensitivity"].norm, want["sens"])
    close(got["jacobians"], want["jac"])
    close(got["spans"], want["spans"])
    close(got["singular"], np.linalg.svd(want["jac"], compute_uv=False))
    close(got["lyapunov"], want["lyap"])


@pytest.mark.parametrize("name", ["lstm_peephole", "lru"])
def test_probes_change_neither_forward_pass_nor_param_grads(name):
    cell, _ = build(name, H)
    got = _results(name)

    @jax.jit
    def plain(params, xs, lengths):  # BPTT without probes
        return jax.value_and_grad(lambda p: _loss(jaxseq.unroll(cell, p, xs, lengths=lengths)[1]))(
            params
        )

    plain_loss, plain_grads = plain(_params(name), XS, jnp.asarray(LENGTHS))
    np.testing.assert_array_equal(got["grads"].loss, plain_loss)
    jax.tree.map(
        functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7),
        got["grads"].param_grads,
        plain_grads,
    )


def test_padded_steps_have_zero_gradient_and_sensitivity_and_identity_jacobian():
    got = _results("lstm_peephole")
    pad = slice(LENGTHS[1], None)
    np.testing.assert_array_equal(got["grads"].norm[pad, 1], 0.0)
    np.testing.assert_array_equal(got["grads"].leaf_norms.c[pad, 1], 0.0)
    np.testing.assert_array_equal(got["sensitivity"].norm[pad, 1], 0.0)
    np.testing.assert_array_equal(got["jacobians"][pad, 1], np.eye(2 * H)[None].repeat(3, 0))
    assert np.all(np.asarray(got["grads"].norm[: LENGTHS[1], 1]) > 0)


def _linear_rnn(u: np.ndarray, w: np.ndarray):
    """h_t = h_{t-1} U + x_t W (Elman with the identity activation, zero bias)."""
    cell = jaxseq.elman(u.shape[0], activation="identity")
    params = jaxseq.ElmanParams(jnp.asarray(w), jnp.asarray(u), jnp.zeros(u.shape[0]))
    return cell, params


def test_linear_rnn_jacobian_products_are_powers_of_u():
    u = normal(jax.random.fold_in(KEY, 4), (H, H), 0.7)
    w = normal(jax.random.fold_in(KEY, 5), (IN, H))
    v = jnp.asarray(normal(jax.random.fold_in(KEY, 6), (1, H)))
    cell, params = _linear_rnn(u, w)

    @jax.jit
    def run(params, xs):
        jac = diagnostics.recurrent_jacobians(cell, params, xs)
        last = lambda ys: jnp.sum(ys[-1] * v)  # noqa: E731
        grads = diagnostics.state_grad_norms(cell, params, xs, last)
        sensitivity = diagnostics.input_sensitivity(cell, params, xs)
        spans = [diagnostics.jacobian_product_norms(jac, norm=n) for n in ("spectral", "frobenius")]
        return jac, diagnostics.jacobian_products(jac), spans, grads.norm, sensitivity.norm

    jac, products, (spans, spans_fro), grads, sensitivity = run(params, XS)
    powers = [np.linalg.matrix_power(u.astype(np.float64), T - 1 - t) for t in range(T)]
    np.testing.assert_allclose(jac, np.broadcast_to(u.T, (T, B, H, H)), rtol=1e-6)
    close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7)
    for t, power in enumerate(powers):  # h_{T-1} = h_t U^n + ...: ∂h_{T-1}/∂h_t = (U^n)ᵀ
        close(products[t], np.broadcast_to(power.T, (B, H, H)), atol=1e-6)
        close(spans[t], np.full(B, np.linalg.norm(power, 2)))
        close(spans_fro[t], np.full(B, np.linalg.norm(power)))
        close(grads[t], np.full(B, np.linalg.norm(power @ np.asarray(v[0]))))
        close(sensitivity[t], np.full(B, np.linalg.norm(w @ power)))


def test_linear_rnn_lyapunov_exponents_are_log_abs_eigenvalues():
    eigenvalues = np.array([0.9, -0.6, 0.3])
    s = np.eye(H) + normal(jax.random.fold_in(KEY, 7), (H, H), 0.3)
    u = (s @ np.diag(eigenvalues) @ np.linalg.inv(s)).astype(np.float32)
    cell, params = _linear_rnn(u, np.ones((IN, H), np.float32))
    xs = jnp.zeros((200, 1, IN))
    exponents = jax.jit(
        lambda p, xs: diagnostics.lyapunov_exponents(diagnostics.recurrent_jacobians(cell, p, xs))
    )(params, xs)
    np.testing.assert_allclose(exponents[0], np.sort(np.log(np.abs(eigenvalues)))[::-1], atol=0.02)


def test_tanh_rnn_obeys_the_sigma_max_bound():
    cell = jaxseq.elman(H)
    params = _random_params(cell, jax.random.fold_in(KEY, 8), scale=0.3)
    sigma = np.linalg.svd(np.asarray(params.w_h, np.float64), compute_uv=False)[0]
    xs = 3.0 * XS  # saturating inputs make the bound loose but it must hold

    @jax.jit
    def run(params, xs):
        jac = diagnostics.recurrent_jacobians(cell, params, xs)
        last = lambda ys: jnp.sum(jnp.square(ys[-1]))  # noqa: E731
        grads = diagnostics.state_grad_norms(cell, params, xs, last)
        weight_norms = diagnostics.max_singular_value(params.w_h)
        return diagnostics.jacobian_product_norms(jac), grads.norm, weight_norms

    spans, grads, sigma_max = run(params, xs)
    bound = sigma ** (T - 1 - np.arange(T))[:, None]
    np.testing.assert_allclose(sigma_max, sigma, rtol=1e-5)
    assert np.all(np.asarray(spans) <= bound * (1 + 1e-5))
    assert np.all(np.asarray(grads) <= bound * np.asarray(grads[-1]) * (1 + 1e-5))
    assert np.asarray(spans)[0].max() < 0.9 * bound[0, 0]  # tanh' < 1 makes it strict


def test_spectral_radius_and_max_singular_value_match_numpy_for_stacked_weights():
    w = normal(jax.random.fold_in(KEY, 9), (3, H, H))
    radius = jax.jit(jax.vmap(diagnostics.spectral_radius))(jnp.asarray(w))
    np.testing.assert_allclose(radius, np.abs(np.linalg.eigvals(w)).max(-1), rtol=1e-5)
    sigma = diagnostics.max_singular_value(jnp.asarray(w[:, :, :2]))
    np.testing.assert_allclose(sigma, np.linalg.norm(w[:, :, :2], 2, axis=(1, 2)), rtol=1e-5)


# lstm_no_forget_gate shares the (i, g, o) path of lstm_coupled, mingru the path of minlstm.
GATED = ["lstm_peephole", "lstm_coupled", "gru", "gru_reset_before", "gru_no_reset_gate", "minlstm"]


def _numpy_gates(name: str, params, xs) -> dict[str, np.ndarray]:
    """Every gate along the NumPy reference trajectory, sliced in the documented gate order."""
    cell, step = build(name, H)
    family, options = cell.name.partition("(")[0], FACTORIES[name].keywords
    sigmoid, per_gate = numpy_reference.sigmoid, numpy_reference._per_gate
    xs = np.asarray(xs, np.float64)
    carry = jax.tree.map(np.asarray, cell.initial_carry(params, (B,)))
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    if family in ("mingru", "minlstm"):
        pre = per_gate(
            xs @ params.w_x + params.b, ("z", "h") if family == "mingru" else ("f", "i", "h")
        )
        return {g: sigmoid(v) for g, v in pre.items() if g != "h"}
    if family == "lstm":
        order = numpy_reference.lstm_gates(**{k: v for k, v in options.items() if k != "peephole"})
    else:
        order = numpy_reference.gru_gates(reset_gate=options.get("reset_gate", True))
    w, u, b = (per_gate(a, order) for a in (params.w_x, params.w_h, params.b))
    gates = {g: [] for g in order}
    for x in xs:
        h = carry[0] if family == "lstm" else carry
        new_carry, _ = step(params, carry, x)
        pre = {g: x @ w[g] + h @ u[g] + b[g] for g in order}
        if family == "lstm":
            peep = np.asarray(params.w_peep) if options.get("peephole") else np.zeros((3, H))
            values = {"i": sigmoid(pre["i"] + peep[0] * carry[1]), "g": np.tanh(pre["g"])}
            values["o"] = sigmoid(pre["o"] + peep[2] * new_carry[1])
            if "f" in order:
                values["f"] = sigmoid(pre["f"] + peep[1] * carry[1])
        else:
            values = {"z": sigmoid(pre["z"])}
            if "r" not in order:
                values["n"] = np.tanh(x @ w["n"] + b["n"] + h @ u["n"])
            elif options.get("reset_after", True):
                values["r"] = sigmoid(pre["r"])
                hn = h @ u["n"] + np.asarray(params.b_hn)
                values["n"] = np.tanh(x @ w["n"] + b["n"] + values["r"] * hn)
            else:
                values["r"] = sigmoid(pre["r"])
                values["n"] = np.tanh(x @ w["n"] + b["n"] + (values["r"] * h) @ u["n"])
        for g in order:
            gates[g].append(values[g])
        carry = new_carry
    return {g: np.stack(v) for g, v in gates.items()}


@pytest.mark.parametrize("name", GATED)
def test_gate_activations_match_numpy_per_gate(name):
    cell, _ = build(name, H)
    params = _random_params(cell, jax.random.fold_in(KEY, 10))
    got = jax.jit(lambda p, xs: diagnostics.gate_activations(cell, p, xs))(params, XS)
    want = _numpy_gates(name, params, XS)
    assert set(got) == set(want)  # (jit returns dicts with sorted keys)
    for gate in want:
        np.testing.assert_allclose(got[gate], want[gate], rtol=1e-5, atol=1e-6, err_msg=gate)


@functools.cache
def _saturation(name: str):
    cell, _ = build(name, H)
    return jax.jit(lambda p, xs, lengths: diagnostics.gate_saturation(cell, p, xs, lengths=lengths))


def test_gate_saturation_counts_valid_steps_against_numpy():
    name = "lstm_peephole"
    cell, _ = build(name, H)
    params = _random_params(cell, jax.random.fold_in(KEY, 11), scale=2.0)  # some saturate
    got = _saturation(name)(params, 2.0 * XS, jnp.asarray(LENGTHS))
    valid = np.arange(T)[:, None] < LENGTHS[None]
    for gate, a in _numpy_gates(name, params, 2.0 * XS).items():
        u = (a + 1.0) / 2.0 if gate in ("g", "n") else a  # tanh candidates mapped to [0, 1]
        u = u[valid]
        np.testing.assert_allclose(got[gate].low, np.mean(u < 0.05), rtol=1e-6, err_msg=gate)
        np.testing.assert_allclose(got[gate].high, np.mean(u > 0.95), rtol=1e-6, err_msg=gate)
        np.testing.assert_allclose(got[gate].mean, np.mean(a[valid]), rtol=1e-5, err_msg=gate)
    assert any(float(s.low) + float(s.high) > 0 for s in got.values())


def test_gate_saturation_of_a_forced_lstm():
    name = "lstm_peephole"
    cell, _ = build(name, H)
    params = _params(name)
    b = params.b.at[:H].set(-30.0).at[H : 2 * H].set(30.0)  # i ≈ 0, f ≈ 1
    got = _saturation(name)(params._replace(b=b), XS, jnp.asarray(LENGTHS))
    assert (float(got["i"].low), float(got["i"].high)) == (1.0, 0.0)
    assert (float(got["f"].low), float(got["f"].high)) == (0.0, 1.0)


def test_vmap_over_seeds_equals_each_seed():
    name = "lstm_peephole"
    cell, _ = build(name, H)
    # Stacked like jax.vmap(cell.init) would stack them (whose threefry compile costs seconds).
    stack = [_random_params(cell, key) for key in jax.random.split(jax.random.fold_in(KEY, 13), 3)]
    seeds = jax.tree.map(lambda *leaves: jnp.stack(leaves), *stack)
    lengths = jnp.asarray(LENGTHS)

    def diagnose(params):  # a few diagnostics, every seed at once
        grads = diagnostics.state_grad_norms(cell, params, XS, _loss, lengths=lengths)
        jac = diagnostics.recurrent_jacobians(cell, params, XS, lengths=lengths)
        lyapunov = diagnostics.lyapunov_exponents(jac, lengths=lengths)
        saturation = diagnostics.gate_saturation(cell, params, XS, lengths=lengths)
        return grads.norm, grads.leaf_norms, lyapunov, saturation

    batched = jax.jit(jax.vmap(diagnose))(seeds)
    radius = jax.vmap(diagnostics.spectral_radius)(seeds.w_h[:, :, :H])
    for s in range(3):
        params = jax.tree.map(lambda a: a[s], seeds)
        full = _diagnose(name)(params, XS, lengths)
        one = (full["grads"].norm, full["grads"].leaf_norms, full["lyapunov"])
        one = (*one, _saturation(name)(params, XS, lengths))
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a[s], b, rtol=1e-5, atol=1e-6), batched, one
        )
        want = np.abs(np.linalg.eigvals(np.asarray(params.w_h[:, :H]))).max()
        np.testing.assert_allclose(radius[s], want, rtol=1e-5)
    assert not np.allclose(batched[0][0], batched[0][1])  # the seeds differ


def test_bad_inputs_fail_fast_with_clear_messages():
    cell = jaxseq.elman(H)
    params = _random_params(cell, KEY)
    with pytest.raises(ValueError, match="loss_fn must return a floating scalar"):
        diagnostics.state_grad_norms(cell, params, XS, lambda ys: ys)
    with pytest.raises(ValueError, match="xs has 3 features"):
        diagnostics.input_sensitivity(cell, params, jnp.zeros((T, B, 3)))
    with pytest.raises(ValueError, match="lengths must lie in"):
        diagnostics.recurrent_jacobians(cell, params, XS, lengths=jnp.array([T + 1, 1]))
    jac = jnp.ones((T, B, H, H))
    with pytest.raises(ValueError, match="norm must be one of"):
        diagnostics.jacobian_product_norms(jac, norm="nuclear")
    with pytest.raises(ValueError, match=r"jacobians must have shape \[..., n, n\]"):
        diagnostics.lyapunov_exponents(jnp.ones((T, H)))
    with pytest.raises(ValueError, match=r"w must have shape \[..., n, n\]"):
        diagnostics.spectral_radius(jnp.ones((H, 2 * H)))
    with pytest.raises(ValueError, match="gate statistics support the gated cells"):
        diagnostics.gate_saturation(cell, params, XS)
    custom = jaxseq.lstm(H, gate_activation=jax.nn.sigmoid)
    with pytest.raises(ValueError, match="need a named gate_activation"):
        diagnostics.gate_activations(custom, _random_params(custom, KEY), XS)
    lstm = jaxseq.lstm(H)
    with pytest.raises(ValueError, match="thresholds must satisfy"):
        diagnostics.gate_saturation(lstm, _random_params(lstm, KEY), XS, low=0.9, high=0.1)
