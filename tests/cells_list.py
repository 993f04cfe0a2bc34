"""Every cell variant the suite runs through (haiku's `CORES` pattern).

Adding a cell to the whole suite takes one line in `ALL_CELLS` (plus its
equations in `numpy_reference.py` and a known-value test in `test_cells.py`).

    @pytest.mark.parametrize("name", CELL_NAMES)
    def test_something(name):
        cell, reference_step = build(name, hidden_size=5)
"""

import functools
import inspect
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference

import jaxseq
from jaxseq.types import Cell

# (id, factory with its keyword arguments). The family is the factory's name.
ALL_CELLS: list[tuple[str, functools.partial]] = [
    ("elman_tanh", functools.partial(jaxseq.elman, activation="tanh")),
    ("elman_relu", functools.partial(jaxseq.elman, activation="relu")),
    ("lstm", functools.partial(jaxseq.lstm)),
    ("lstm_peephole", functools.partial(jaxseq.lstm, peephole=True)),
    ("lstm_no_forget_gate", functools.partial(jaxseq.lstm, forget_gate=False)),
    ("lstm_coupled", functools.partial(jaxseq.lstm, coupled=True)),
    ("gru", functools.partial(jaxseq.gru, reset_after=True)),
    ("gru_reset_before", functools.partial(jaxseq.gru, reset_after=False)),
    ("gru_no_reset_gate", functools.partial(jaxseq.gru, reset_gate=False)),
    ("mingru", functools.partial(jaxseq.cells.mingru)),
    ("minlstm", functools.partial(jaxseq.cells.minlstm)),
    ("lru", functools.partial(jaxseq.cells.lru, r_min=0.5, r_max=0.95)),
]

CELL_NAMES: list[str] = [name for name, _ in ALL_CELLS]
FACTORIES: dict[str, functools.partial] = dict(ALL_CELLS)


def family(name: str) -> str:
    """`"elman"`, `"lstm"`, `"gru"`, `"mingru"`, `"minlstm"` or `"lru"`: the factory's name."""
    return FACTORIES[name].func.__name__


def reference_step(name: str) -> Callable:
    """The NumPy step `(params, carry, x_t) -> (carry, y_t)` with the same options.

    Only the factory keywords that change the equations are passed on
    (initialiser options such as `forget_bias` or `b_init` are not).
    """
    factory = FACTORIES[name]
    step = numpy_reference.STEPS[family(name)]
    accepted = inspect.signature(step).parameters
    options = {k: v for k, v in factory.keywords.items() if k in accepted}
    return functools.partial(step, **options)


@functools.cache
def build(name: str, hidden_size: int) -> tuple[Cell, Callable]:
    """`(cell, numpy_step)` for the named variant; cached so jitted closures are reused."""
    return FACTORIES[name](hidden_size), reference_step(name)


_NOISE_SIZE = 4096


def normal(key: jax.Array, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    """N(0, scale²) float32 entries of `shape` (at most 4096), as a NumPy array.

    Always draws the same 4096 entries and slices on the host, so the sampler
    compiles once for the whole suite instead of once per shape (~0.5 s each).
    """
    size = math.prod(shape)
    assert size <= _NOISE_SIZE, shape
    draw = np.asarray(jax.random.normal(key, (_NOISE_SIZE,), jnp.float32))
    return scale * draw[:size].reshape(shape)


def random_params(cell: Cell, key: jax.Array, input_size: int, scale: float = 0.5):
    """`cell.init` plus N(0, scale²) noise on every leaf.

    The noise makes zero-initialised biases, `b_hn` and peepholes non-trivial,
    so a reference that ignored one of them would disagree.
    """
    k_init, k_noise = jax.random.split(key)
    params = cell.init(k_init, input_size)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(k_noise, len(leaves))
    noisy = [
        jnp.asarray(np.asarray(leaf) + normal(k, leaf.shape, scale))
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(treedef, noisy)


def random_carry(cell: Cell, params, key: jax.Array, batch_shape: tuple[int, ...]):
    """A non-zero carry with the structure of `cell.initial_carry`, entries N(0, 0.5²)."""
    zeros = jax.eval_shape(lambda p: cell.initial_carry(p, batch_shape), params)
    leaves, treedef = jax.tree.flatten(zeros)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef, [jnp.asarray(normal(k, z.shape, 0.5)) for z, k in zip(leaves, keys, strict=True)]
    )
