"""Weights to and from PyTorch and Flax.

PyTorch is an optional extra: `from_torch` and `to_torch` are thin wrappers
that import `jaxseq.interop.pytorch` (and so torch) only when called.
"""

from types import ModuleType
from typing import TYPE_CHECKING

from jaxseq.interop.linen import (
    LinenCell,
    carry_from_linen,
    carry_to_linen,
    from_linen,
    to_linen,
)
from jaxseq.layers import Layer, LayerParams

if TYPE_CHECKING:
    from torch import nn


def _pytorch() -> ModuleType:
    try:
        from jaxseq.interop import pytorch
    except ModuleNotFoundError as error:
        if error.name != "torch":
            raise
        raise ImportError(
            "jaxseq.interop.from_torch / to_torch need PyTorch; install it with "
            "`pip install 'jaxseq[dev]'` (which pins the CPU build torch==2.13.0)"
        ) from error
    return pytorch


def from_torch(module: "nn.Module") -> tuple[Layer, LayerParams]:
    """Converts a PyTorch `nn.RNN` / `nn.LSTM` / `nn.GRU` to `(layer, params)`.

    `ys, final = layer.apply(params, xs)` then matches `module(xs)` for
    time-major `xs: [T, B, in]`. See `jaxseq.interop.pytorch.from_torch`.
    """
    return _pytorch().from_torch(module)


def to_torch(layer: Layer, params: LayerParams, module: "nn.Module") -> "nn.Module":
    """Writes a layer's params into a PyTorch `nn.RNN` / `nn.LSTM` / `nn.GRU` in place.

    Returns `module`. See `jaxseq.interop.pytorch.to_torch`.
    """
    return _pytorch().to_torch(layer, params, module)


__all__ = [
    "LinenCell",
    "carry_from_linen",
    "carry_to_linen",
    "from_linen",
    "from_torch",
    "to_linen",
    "to_torch",
]
