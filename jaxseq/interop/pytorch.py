"""Weights to and from PyTorch `nn.RNN`, `nn.LSTM` and `nn.GRU`.

This module imports torch (an optional extra); `jaxseq.interop.from_torch` and
`jaxseq.interop.to_torch` import it only when called.

The mapping, for layer k and direction d (suffix `_l{k}`, plus `_reverse` for
the backward direction), with H the hidden size and weights right-multiplying:

    w_x  = weight_ih.T                        [in, G*H]
    w_h  = weight_hh.T                        [H, G*H]
    b    = bias_ih + bias_hh                  [G*H]      nn.RNN (G=1), nn.LSTM (G=4)
    b    = bias_ih + concat(bias_hh[:2H], 0)  [3H]       nn.GRU (G=3)
    b_hn = bias_hh[2H:]                       [H]        nn.GRU, inside the reset

Gate orders agree: LSTM (i, f, g, o), GRU (r, z, n). The stacked carry
`[num_layers * num_directions, *batch, H]` is indexed as PyTorch's `h_n`.

jaxseq is time-major and has no `batch_first` flag: the layer returned for a
`batch_first=True` module still takes `xs: [T, B, in]`, so transpose its inputs
(`xs = jnp.swapaxes(xs_batch_first, 0, 1)`) and its outputs back.
"""

import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

from jaxseq import initializers
from jaxseq.cells import ElmanParams, GRUParams, LSTMParams, elman, gru, lstm
from jaxseq.layers import Layer, LayerParams, rnn
from jaxseq.types import Cell, Params

_SUPPORTED = "torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU"


def _check_module(module: nn.Module) -> None:
    """Raises unless `module` is an `nn.RNN`, `nn.LSTM` or `nn.GRU` that jaxseq can express."""
    if not isinstance(module, nn.RNN | nn.LSTM | nn.GRU):
        kind = f"{type(module).__module__}.{type(module).__qualname__}"
        raise TypeError(f"module must be one of {_SUPPORTED}, got {kind}")
    if getattr(module, "proj_size", 0) > 0:
        raise ValueError(
            f"module.proj_size must be 0 (LSTM projections are not supported), "
            f"got proj_size={module.proj_size}"
        )


def _cell_for(module: nn.Module) -> Cell:
    """The jaxseq cell computing what one layer and direction of `module` computes.

    Its `init` draws like PyTorch's `reset_parameters`: every weight from
    U(−1/√H, 1/√H), biases too (zeros when `module.bias` is False).
    """
    w_init = initializers.uniform_fan_in()
    b_init = w_init if module.bias else initializers.zeros
    inits = dict(w_x_init=w_init, w_h_init=w_init, b_init=b_init)
    if isinstance(module, nn.LSTM):
        return lstm(module.hidden_size, forget_bias=0.0, **inits)
    if isinstance(module, nn.GRU):
        return gru(module.hidden_size, reset_after=True, **inits)
    return elman(module.hidden_size, activation=module.nonlinearity, **inits)


def _params_type(module: nn.Module) -> type:
    if isinstance(module, nn.LSTM):
        return LSTMParams
    return GRUParams if isinstance(module, nn.GRU) else ElmanParams


def _suffix(layer: int, direction: int) -> str:
    return f"_l{layer}" + ("_reverse" if direction else "")


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().to(torch.float32).numpy()


def _params_from(module: nn.Module, layer: int, direction: int) -> Params:
    """One cell's jaxseq params from `module`'s tensors for `layer` and `direction`."""
    sfx, hidden = _suffix(layer, direction), module.hidden_size
    w_ih = _numpy(getattr(module, "weight_ih" + sfx))  # [G*H, in]
    w_hh = _numpy(getattr(module, "weight_hh" + sfx))  # [G*H, H]
    if module.bias:
        b_ih = _numpy(getattr(module, "bias_ih" + sfx))
        b_hh = _numpy(getattr(module, "bias_hh" + sfx))
    else:
        b_ih = b_hh = np.zeros(w_hh.shape[0], np.float32)
    params_type = _params_type(module)
    fields = dict(w_x=w_ih.T, w_h=w_hh.T)
    if params_type is GRUParams:
        fields["b"] = b_ih + np.concatenate([b_hh[: 2 * hidden], np.zeros_like(b_hh[2 * hidden :])])
        fields["b_hn"] = b_hh[2 * hidden :]
    else:
        fields["b"] = b_ih + b_hh
    return params_type(**{k: jnp.asarray(v, dtype=jnp.float32) for k, v in fields.items()})


def from_torch(module: nn.Module) -> tuple[Layer, LayerParams]:
    """Converts a PyTorch `nn.RNN`, `nn.LSTM` or `nn.GRU` to a jaxseq layer and its params.

        ys, final = layer.apply(params, xs)    matches    module(xs)

    for time-major `xs: [T, B, in]` (see the module docstring for `batch_first`
    modules: transpose their inputs), with `ys: [T, B, D*H]` and `final` the
    stacked carry `[num_layers*D, B, H]` (`LSTMCarry(h, c)` for an LSTM), D=2
    when bidirectional. Packed sequences correspond to `lengths=`, an initial
    `(h0, c0)` to `carry=LSTMCarry(h0, c0)`, `h0` to `carry=h0`.

    Cells: `nn.RNN` → `elman(H, activation=module.nonlinearity)`, `nn.LSTM` →
    `lstm(H, forget_bias=0.0)`, `nn.GRU` → `gru(H, reset_after=True)`, each
    with PyTorch's initialisers, so `layer.init` draws like `reset_parameters`.
    `module.dropout` is copied to `layer.dropout`. Tensors become float32 jax
    arrays; the module is not modified.

    Args:
      module: an `nn.RNN` (tanh or relu), `nn.LSTM` (with `proj_size=0`) or
        `nn.GRU`; any `num_layers`, bidirectional or not, with or without bias.

    Returns:
      `(layer, params)`: a `jaxseq.Layer` (as made by `jaxseq.rnn`) and its
      params `params[layer][direction]`, each `ElmanParams`, `LSTMParams` or
      `GRUParams` with `w_x: [in, G*H]`, `w_h: [H, G*H]`, `b: [G*H]` (and
      `b_hn: [H]` for the GRU).

    Raises:
      TypeError: `module` is not one of the supported types.
      ValueError: an LSTM with `proj_size > 0`.
    """
    _check_module(module)
    num_dirs = 2 if module.bidirectional else 1
    layer = rnn(
        _cell_for(module),
        num_layers=module.num_layers,
        bidirectional=module.bidirectional,
        dropout=float(module.dropout),
    )
    params = tuple(
        tuple(_params_from(module, k, d) for d in range(num_dirs)) for k in range(module.num_layers)
    )
    return layer, params


def _check_match(layer: Layer, params: LayerParams, module: nn.Module) -> None:
    """Raises `ValueError` unless `layer` and `params` have `module`'s kind and sizes."""
    kind = type(module).__name__
    for name, got, want in [
        ("hidden_size", layer.cell.hidden_size, module.hidden_size),
        ("num_layers", layer.num_layers, module.num_layers),
        ("bidirectional", layer.num_directions == 2, module.bidirectional),
    ]:
        if got != want:
            raise ValueError(f"module.{name} is {want!r} but the layer has {name}={got!r}")
    expected = _cell_for(module)
    if layer.cell.name != expected.name:
        raise ValueError(
            f"the layer's cell {layer.cell.name} does not match the {kind} module, "
            f"which needs {expected.name}"
        )
    num_dirs = layer.num_directions
    if len(params) != layer.num_layers or any(len(p) != num_dirs for p in params):
        raise ValueError(
            f"params must be [num_layers={layer.num_layers}][num_directions={num_dirs}] "
            f"cell params, got {len(params)} layers"
        )
    for k, per_layer in enumerate(params):
        for d, p in enumerate(per_layer):
            if not isinstance(p, _params_type(module)):
                raise ValueError(
                    f"params[{k}][{d}] must be {_params_type(module).__name__} for a {kind}, "
                    f"got {type(p).__name__}"
                )
    input_size = layer.cell.input_size(params[0][0])
    if input_size != module.input_size:
        raise ValueError(
            f"module.input_size is {module.input_size} but params[0][0] were made for "
            f"input_size={input_size}"
        )


def _tensors_from(p: Params, module: nn.Module, layer: int, direction: int) -> dict:
    """`module`'s tensors (as NumPy arrays, by attribute name) for one cell's params."""
    sfx = _suffix(layer, direction)
    b = np.array(p.b)
    bias_hh = np.zeros_like(b)
    if isinstance(p, GRUParams):
        bias_hh[2 * module.hidden_size :] = np.array(p.b_hn)
    tensors = {"weight_ih" + sfx: np.array(p.w_x).T, "weight_hh" + sfx: np.array(p.w_h).T}
    if module.bias:
        tensors.update({"bias_ih" + sfx: b, "bias_hh" + sfx: bias_hh})
    elif np.any(b != 0) or np.any(bias_hh != 0):
        raise ValueError(
            f"module.bias is False but params[{layer}][{direction}] has nonzero biases "
            f"(b{', b_hn' if isinstance(p, GRUParams) else ''}); use a module with bias=True"
        )
    return tensors


def to_torch(layer: Layer, params: LayerParams, module: nn.Module) -> nn.Module:
    """Writes a jaxseq layer's params into a PyTorch `nn.RNN`, `nn.LSTM` or `nn.GRU` in place.

    The inverse of `from_torch`, up to how the bias is split: the whole bias `b`
    goes to `bias_ih` and `bias_hh` is zeroed, except the GRU's candidate block
    `bias_hh[2H:] = b_hn`. Afterwards `module(xs)` matches `layer.apply(params,
    xs)` for time-major `xs: [T, B, in]`. Nothing is written unless every
    check passes; `module.dropout` and `batch_first` are left as they are.

    Args:
      layer: a `jaxseq.Layer` whose cell is what `from_torch(module)` would
        make (e.g. `jaxseq.rnn(jaxseq.lstm(H), num_layers=L, bidirectional=...)`).
      params: its params `params[layer][direction]`, with `w_x: [in, G*H]`,
        `w_h: [H, G*H]`, `b: [G*H]` (and `b_hn: [H]` for the GRU).
      module: the module to overwrite; any device and floating dtype.

    Returns:
      `module`, with its weights replaced.

    Raises:
      TypeError: `module` is not one of the supported types.
      ValueError: `proj_size > 0`; the module's hidden size, number of layers,
        bidirectionality, input size or cell kind (e.g. tanh vs relu) differs
        from the layer's; or `module.bias` is False and the biases are nonzero.
    """
    _check_module(module)
    _check_match(layer, params, module)
    tensors = {}
    for k, per_layer in enumerate(params):
        for d, p in enumerate(per_layer):
            tensors.update(_tensors_from(p, module, k, d))
    for name, value in tensors.items():
        shape = tuple(getattr(module, name).shape)
        if shape != value.shape:
            raise ValueError(f"module.{name} has shape {shape} but the params give {value.shape}")
    with torch.no_grad():
        for name, value in tensors.items():
            target = getattr(module, name)
            target.copy_(torch.as_tensor(value, dtype=target.dtype, device=target.device))
    return module
