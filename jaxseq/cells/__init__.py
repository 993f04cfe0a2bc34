"""Recurrent cells: one family a file, each a factory returning a `Cell`."""

from jaxseq.cells._common import ACTIVATIONS
from jaxseq.cells.elman import ElmanParams, elman
from jaxseq.cells.gru import GRUParams, gru
from jaxseq.cells.lru import LRUCarry, LRUParams, lru
from jaxseq.cells.lstm import LSTMCarry, LSTMParams, lstm
from jaxseq.cells.minrnn import MinGRUParams, MinLSTMParams, mingru, minlstm

__all__ = [
    "ACTIVATIONS",
    "ElmanParams",
    "GRUParams",
    "LRUCarry",
    "LRUParams",
    "LSTMCarry",
    "LSTMParams",
    "MinGRUParams",
    "MinLSTMParams",
    "elman",
    "gru",
    "lru",
    "lstm",
    "mingru",
    "minlstm",
]
