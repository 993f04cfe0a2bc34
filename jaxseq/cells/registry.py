"""Cells by name, for experiment flags such as `--cell=irnn`.

Each name is a factory call with documented settings, so an ablation study can
say `--cell=lstm_no_forget` and mean exactly one thing. Extra keyword arguments
override the preset (`by_name("elman", 64, activation="relu")`).
"""

from collections.abc import Callable
from typing import Any

from jaxseq import initializers
from jaxseq.cells.elman import elman
from jaxseq.cells.gru import gru
from jaxseq.cells.lru import lru
from jaxseq.cells.lstm import lstm
from jaxseq.cells.minrnn import mingru, minlstm
from jaxseq.types import Cell

_PRESETS: dict[str, tuple[Callable[..., Cell], dict[str, Any], str]] = {
    "elman": (elman, {}, "tanh, orthogonal U (Elman 1990)"),
    "elman_relu": (elman, {"activation": "relu"}, "ReLU, orthogonal U"),
    "irnn": (
        elman,
        {
            "activation": "relu",
            "w_h_init": initializers.identity(),
            "w_x_init": initializers.normal(1e-3),
        },
        "ReLU, U = I, W ~ N(0, 1e-3) (Le et al. 2015)",
    ),
    "lstm": (lstm, {"forget_bias": 1.0}, "forget bias 1 (Gers et al. 2000; Jozefowicz 2015)"),
    "lstm_fb0": (lstm, {"forget_bias": 0.0}, "forget bias 0"),
    "lstm_peephole": (lstm, {"peephole": True}, "peephole connections (Gers & Schmidhuber 2000)"),
    "lstm_no_forget": (lstm, {"forget_gate": False}, "no forget gate: the 1997 LSTM"),
    "lstm_coupled": (lstm, {"coupled": True}, "coupled input/forget gates, f = 1 - i"),
    "gru": (gru, {}, "reset after the matmul (PyTorch / cuDNN form; Cho et al. 2014)"),
    "gru_no_reset": (gru, {"reset_gate": False}, "no reset gate"),
    "mingru": (mingru, {}, "minimal GRU, linear in h: parallel in time (Feng et al. 2024)"),
    "minlstm": (minlstm, {}, "minimal LSTM, linear in h: parallel in time (Feng et al. 2024)"),
    "lru": (lru, {}, "linear recurrent unit, ring init (Orvieto et al. 2023)"),
}


def names() -> tuple[str, ...]:
    """The known cell names, in a stable order."""
    return tuple(_PRESETS)


def describe(name: str) -> str:
    """One line saying what `name` means."""
    _check_name(name)
    return _PRESETS[name][2]


def by_name(name: str, hidden_size: int, **overrides: Any) -> Cell:
    """Builds the cell called `name` (see `names()`) with `hidden_size` units.

    Args:
      name: a preset name, e.g. `"lstm"`, `"irnn"`, `"gru_no_reset"`.
      hidden_size: width of the state.
      **overrides: keyword arguments passed to the factory over the preset's,
        e.g. `compute_dtype=jnp.bfloat16` (every cell accepts it).

    Returns:
      The `Cell`.
    """
    _check_name(name)
    factory, preset, _ = _PRESETS[name]
    return factory(hidden_size, **{**preset, **overrides})


def _check_name(name: str) -> None:
    if name not in _PRESETS:
        raise ValueError(f"cell must be one of {', '.join(_PRESETS)}; got {name!r}")
