"""`jaxseq.interop.from_torch` / `to_torch` against PyTorch run on the same weights."""

import importlib
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.utils import rnn as torch_rnn  # noqa: E402

import jaxseq  # noqa: E402
from jaxseq.interop import from_torch, to_torch  # noqa: E402

torch.set_num_threads(1)

T, B, D, H = 6, 3, 4, 5
KINDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
TOL = dict(atol=1e-5, rtol=1e-5)


def _module(kind: str, *, seed: int = 0, input_size: int = D, hidden_size: int = H, **kwargs):
    """A PyTorch module of `kind`, its weights drawn from `torch.manual_seed(seed)`."""
    torch.manual_seed(seed)
    if kind == "lstm":
        return nn.LSTM(input_size, hidden_size, **kwargs)
    if kind == "gru":
        return nn.GRU(input_size, hidden_size, **kwargs)
    return nn.RNN(input_size, hidden_size, nonlinearity=kind.removeprefix("rnn_"), **kwargs)


def _jax_cell(kind: str) -> jaxseq.Cell:
    """The jaxseq cell a `kind` module corresponds to, made with the factories' defaults."""
    if kind == "lstm":
        return jaxseq.lstm(H)
    if kind == "gru":
        return jaxseq.gru(H)
    return jaxseq.elman(H, activation=kind.removeprefix("rnn_"))


def _normal(key, *shape, scale: float = 1.0) -> jax.Array:
    """N(0, scale²) draws of `shape`, through one compiled sampler (test shapes vary a lot)."""
    draws = np.asarray(jax.random.normal(key, (512,), jnp.float32))
    return jnp.asarray(scale * draws[: np.prod(shape)].reshape(shape))


def _tensor(x):
    return torch.from_numpy(np.array(x))


def _carry_for(kind: str, key, count: int):
    """A nonzero initial carry `[count, B, H]` as (jaxseq carry, torch state)."""
    k_h, k_c = jax.random.split(key)
    h0 = _normal(k_h, count, B, H, scale=0.5)
    if kind != "lstm":
        return h0, _tensor(h0)
    c0 = _normal(k_c, count, B, H, scale=0.5)
    return jaxseq.LSTMCarry(h0, c0), (_tensor(h0), _tensor(c0))


def _as_numpy(final):
    """A final state (jax array / `LSTMCarry`, or torch tensor / tuple) as NumPy leaves."""
    if isinstance(final, tuple):
        return tuple(_as_numpy(f) for f in final)
    if isinstance(final, torch.Tensor):
        return final.detach().numpy()
    return np.asarray(final)


def _torch_run(module, xs, state=None):
    with torch.no_grad():
        ys, final = module(_tensor(xs), state)
    return ys.numpy(), _as_numpy(final)


def _check_same(jax_out, torch_out) -> None:
    (ys, final), (ys_ref, final_ref) = jax_out, torch_out
    chex.assert_trees_all_close(np.asarray(ys), ys_ref, **TOL)
    chex.assert_trees_all_close(_as_numpy(final), final_ref, **TOL)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_torch(kind, num_layers, bidirectional, key):
    module = _module(kind, num_layers=num_layers, bidirectional=bidirectional)
    layer, params = from_torch(module)
    xs = _normal(key, T, B, D)
    ys, final = jax.jit(layer.apply)(params, xs)
    dirs = 2 if bidirectional else 1
    chex.assert_shape(ys, (T, B, dirs * H))
    chex.assert_shape(jax.tree.leaves(final), (num_layers * dirs, B, H))
    _check_same((ys, final), _torch_run(module, xs))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_packed_sequences_match_lengths(kind, bidirectional, key):
    module = _module(kind, num_layers=2 if bidirectional else 1, bidirectional=bidirectional)
    layer, params = from_torch(module)
    xs = _normal(key, T, B, D)
    lengths = np.array([4, T, 2])  # unsorted, one full-length sequence
    packed = torch_rnn.pack_padded_sequence(
        _tensor(xs), torch.from_numpy(lengths), enforce_sorted=False
    )
    with torch.no_grad():
        out, final_ref = module(packed)
    ys_ref, _ = torch_rnn.pad_packed_sequence(out, total_length=T)
    ys, final = jax.jit(layer.apply)(params, xs, lengths=jnp.asarray(lengths, jnp.int32))
    _check_same((ys, final), (ys_ref.numpy(), _as_numpy(final_ref)))
    np.testing.assert_array_equal(np.asarray(ys)[4:, 0], 0.0)  # padded steps emit zeros


@pytest.mark.parametrize(
    "kind, num_layers, bidirectional",
    [("rnn_tanh", 1, True), ("rnn_relu", 2, False), ("lstm", 2, True), ("gru", 1, False)],
)
def test_initial_carry(kind, num_layers, bidirectional, key):
    k_x, k_c = jax.random.split(key)
    module = _module(kind, num_layers=num_layers, bidirectional=bidirectional)
    layer, params = from_torch(module)
    xs = _normal(k_x, T, B, D)
    carry, state = _carry_for(kind, k_c, num_layers * (2 if bidirectional else 1))
    _check_same(jax.jit(layer.apply)(params, xs, carry), _torch_run(module, xs, state))


def _loss_weights(key, dirs: int, count: int):
    k_y, k_h = jax.random.split(key)
    return _normal(k_y, T, B, dirs * H), _normal(k_h, count, B, H)


def _torch_loss(module, xs_t, w_y, w_h):
    ys, final = module(xs_t)
    h_n = final[0] if isinstance(final, tuple) else final
    return (ys * _tensor(w_y)).sum() + (h_n * _tensor(w_h)).sum()


def _jax_loss(layer, params, xs, w_y, w_h):
    ys, final = layer.apply(params, xs)
    h_n = final.h if isinstance(final, jaxseq.LSTMCarry) else final
    return jnp.sum(ys * w_y) + jnp.sum(h_n * w_h)


def _grads_in_torch_layout(kind: str, grads, num_dirs: int) -> dict:
    """Maps jaxseq param grads to PyTorch's names: ∂/∂bias_ih = ∂/∂b, and so on."""
    out = {}
    for k, per_layer in enumerate(grads):
        for d, g in enumerate(per_layer):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            out["weight_ih" + sfx] = np.asarray(g.w_x).T
            out["weight_hh" + sfx] = np.asarray(g.w_h).T
            out["bias_ih" + sfx] = np.asarray(g.b)
            if kind == "gru":
                out["bias_hh" + sfx] = np.concatenate([np.asarray(g.b)[: 2 * H], g.b_hn])
            else:
                out["bias_hh" + sfx] = np.asarray(g.b)
    assert len(out) == 4 * len(grads) * num_dirs
    return out


@pytest.mark.parametrize(
    "kind, num_layers, bidirectional",
    [("rnn_tanh", 1, False), ("rnn_relu", 1, True), ("lstm", 2, True), ("gru", 1, True)],
)
def test_gradients(kind, num_layers, bidirectional, key):
    """∂L/∂xs and ∂L/∂params (in PyTorch's layout) for L = Σ ys·w_y + Σ h_n·w_h."""
    k_x, k_w = jax.random.split(key)
    module = _module(kind, num_layers=num_layers, bidirectional=bidirectional)
    layer, params = from_torch(module)
    dirs = 2 if bidirectional else 1
    xs = _normal(k_x, T, B, D)
    w_y, w_h = _loss_weights(k_w, dirs, num_layers * dirs)
    loss = lambda p, x: _jax_loss(layer, p, x, w_y, w_h)  # noqa: E731
    grads, grad_xs = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, xs)
    chex.assert_trees_all_equal_shapes(grads, params)
    xs_t = _tensor(xs).requires_grad_()
    _torch_loss(module, xs_t, w_y, w_h).backward()
    chex.assert_trees_all_close(np.asarray(grad_xs), xs_t.grad.numpy(), **TOL)
    expected = {name: p.grad.numpy() for name, p in module.named_parameters()}
    chex.assert_trees_all_close(_grads_in_torch_layout(kind, grads, dirs), expected, **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_bias_false(kind, key):
    k_x, k_init = jax.random.split(key)
    module = _module(kind, num_layers=2, bias=False)
    layer, params = from_torch(module)
    xs = _normal(k_x, T, B, D)
    _check_same(jax.jit(layer.apply)(params, xs), _torch_run(module, xs))
    for p in jax.tree.leaves(params[0][0]._replace(w_x=None, w_h=None)):
        np.testing.assert_array_equal(p, 0.0)
    # `layer.init` draws zero biases for a bias-free module, so they can go back.
    fresh = layer.init(k_init, D)
    to_torch(layer, fresh, _module(kind, seed=1, num_layers=2, bias=False))
    bad = fresh[1][0]._replace(b=fresh[1][0].b + 1.0)
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.raises(ValueError, match=r"bias is False.*params\[1\]\[0\]"):
        to_torch(layer, (fresh[0], (bad,)), module)
    for p, p_before in zip(module.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), p_before)  # nothing written on error


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(kind, key):
    source = _module(kind, num_layers=2, bidirectional=True)
    target = _module(kind, seed=1, num_layers=2, bidirectional=True)
    layer, params = from_torch(source)
    assert to_torch(layer, params, target) is target
    xs = _normal(key, T, B, D)
    _check_same(_torch_run(target, xs), _torch_run(source, xs))
    bias_hh = target.bias_hh_l1_reverse.detach().numpy()
    np.testing.assert_array_equal(bias_hh[: 2 * H] if kind == "gru" else bias_hh, 0.0)
    chex.assert_trees_all_close(from_torch(target)[1], params, **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_to_torch_from_layer_init(kind, key):
    k_x, k_init = jax.random.split(key)
    layer, _ = from_torch(_module(kind, num_layers=2))
    params = layer.init(k_init, D)  # random jaxseq params, PyTorch's distribution
    module = to_torch(layer, params, _module(kind, seed=1, num_layers=2))
    xs = _normal(k_x, T, B, D)
    _check_same(jax.jit(layer.apply)(params, xs), _torch_run(module, xs))


@pytest.mark.parametrize("kind", KINDS)
def test_to_torch_accepts_layers_made_by_the_factories(kind):
    """A layer made with `jaxseq.rnn(jaxseq.lstm(H))` etc. (default settings) fits its module."""
    layer = jaxseq.rnn(_jax_cell(kind), num_layers=2, bidirectional=True)
    _, params = from_torch(_module(kind, num_layers=2, bidirectional=True))
    module = to_torch(layer, params, _module(kind, seed=1, num_layers=2, bidirectional=True))
    chex.assert_trees_all_close(from_torch(module)[1], params, **TOL)


def test_batch_first_module_takes_transposed_inputs(key):
    module = _module("lstm", batch_first=True)
    layer, params = from_torch(module)
    xs_batch_first = _normal(key, B, T, D)
    ys, final = jax.jit(layer.apply)(params, jnp.swapaxes(xs_batch_first, 0, 1))
    ys_ref, final_ref = _torch_run(module, xs_batch_first)
    _check_same((jnp.swapaxes(ys, 0, 1), final), (ys_ref, final_ref))


def test_settings_and_dtypes_copied(key):
    module = _module("gru", num_layers=2, dropout=0.25).double()
    layer, params = from_torch(module)
    assert (layer.num_layers, layer.num_directions, layer.dropout) == (2, 1, 0.25)
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    to_torch(layer, layer.init(key, D), module)
    assert {p.dtype for p in module.parameters()} == {torch.float64}


def test_proj_size_rejected():
    module = _module("lstm", proj_size=2)
    with pytest.raises(ValueError, match="proj_size"):
        from_torch(module)
    with pytest.raises(ValueError, match="proj_size"):
        to_torch(*from_torch(_module("lstm")), module)


@pytest.mark.parametrize("module_type", [nn.Linear, nn.LSTMCell])
def test_unsupported_module_type(module_type):
    torch.manual_seed(0)
    module = module_type(D, H)
    with pytest.raises(TypeError, match=rf"torch\.nn\.LSTM.*{module_type.__name__}"):
        from_torch(module)
    with pytest.raises(TypeError, match=module_type.__name__):
        to_torch(*from_torch(_module("lstm")), module)


@pytest.mark.parametrize(
    "kind, kwargs, match",
    [
        ("lstm", dict(hidden_size=H + 1), "hidden_size"),
        ("lstm", dict(num_layers=1), "num_layers"),
        ("lstm", dict(bidirectional=False), "bidirectional"),
        ("lstm", dict(input_size=D + 1), "input_size"),
        ("gru", dict(), "lstm.*GRU"),
        ("rnn_relu", dict(), "lstm.*RNN"),
    ],
)
def test_to_torch_rejects_mismatched_module(kind, kwargs, match):
    layer, params = from_torch(_module("lstm", num_layers=2, bidirectional=True))
    kwargs = dict(num_layers=2, bidirectional=True) | kwargs
    with pytest.raises(ValueError, match=match):
        to_torch(layer, params, _module(kind, **kwargs))


def test_to_torch_rejects_other_activation_and_params():
    layer, params = from_torch(_module("rnn_tanh"))
    with pytest.raises(ValueError, match="activation='tanh'.*activation='relu'"):
        to_torch(layer, params, _module("rnn_relu"))
    with pytest.raises(ValueError, match=r"num_layers=1\]\[num_directions=1\]"):
        to_torch(layer, params + params, _module("rnn_tanh"))
    gru_params = from_torch(_module("gru"))[1]
    with pytest.raises(ValueError, match=r"params\[0\]\[0\] must be ElmanParams"):
        to_torch(layer, gru_params, _module("rnn_tanh"))


def test_interop_imports_torch_lazily(monkeypatch):
    """`jaxseq.interop` imports without torch; the wrappers then raise a helpful ImportError."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    monkeypatch.delitem(sys.modules, "jaxseq.interop.pytorch")
    monkeypatch.delattr(jaxseq.interop, "pytorch")
    interop = importlib.reload(jaxseq.interop)
    with pytest.raises(ImportError, match="need PyTorch"):
        interop.from_torch(None)
    with pytest.raises(ImportError, match="need PyTorch"):
        interop.to_torch(None, None, None)
