"""jaxseq: pure-function recurrent cells, one scan, BPTT, for JAX.

Public API only; see README.md for a tour.
"""

from jaxseq import initializers, interop
from jaxseq.cells import (
    ElmanParams,
    GRUParams,
    LSTMCarry,
    LSTMParams,
    elman,
    gru,
    lstm,
)
from jaxseq.layers import Layer, rnn
from jaxseq.types import Cell
from jaxseq.unroll import unroll

__all__ = [
    "Cell",
    "ElmanParams",
    "GRUParams",
    "LSTMCarry",
    "LSTMParams",
    "Layer",
    "elman",
    "gru",
    "initializers",
    "interop",
    "lstm",
    "rnn",
    "unroll",
]

__version__ = "0.1.0"
