"""Recurrent cells: one family a file, each a factory returning a `Cell`."""

from jaxseq.cells._common import ACTIVATIONS
from jaxseq.cells.elman import ElmanParams, elman
from jaxseq.cells.gru import GRUParams, gru
from jaxseq.cells.lstm import LSTMCarry, LSTMParams, lstm

__all__ = [
    "ACTIVATIONS",
    "ElmanParams",
    "GRUParams",
    "LSTMCarry",
    "LSTMParams",
    "elman",
    "gru",
    "lstm",
]
