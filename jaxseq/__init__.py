"""jaxseq: pure-function recurrent cells, one scan, BPTT, for JAX.

Public API only; see README.md for a tour.
"""

from jaxseq import data, diagnostics, initializers, interop, models, parallel, sharding, training
from jaxseq.cells import (
    ElmanParams,
    GRUParams,
    LRUCarry,
    LRUParams,
    LSTMCarry,
    LSTMParams,
    MinGRUParams,
    MinLSTMParams,
    elman,
    gru,
    lru,
    lstm,
    mingru,
    minlstm,
)
from jaxseq.layers import Layer, rnn
from jaxseq.types import Cell, LinearRecurrence, RecurrentMatmul
from jaxseq.unroll import unroll

__all__ = [
    "Cell",
    "ElmanParams",
    "GRUParams",
    "LRUCarry",
    "LRUParams",
    "LSTMCarry",
    "LSTMParams",
    "Layer",
    "LinearRecurrence",
    "RecurrentMatmul",
    "MinGRUParams",
    "MinLSTMParams",
    "data",
    "diagnostics",
    "elman",
    "gru",
    "initializers",
    "interop",
    "lru",
    "lstm",
    "mingru",
    "minlstm",
    "models",
    "parallel",
    "rnn",
    "sharding",
    "training",
    "unroll",
]

__version__ = "0.1.0"
