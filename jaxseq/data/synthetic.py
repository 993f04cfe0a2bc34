"""Classic long-range synthetic tasks, each a pure function of a PRNG key.

All return time-major inputs `xs: [T, batch, features]` and jit with the sizes
static (`jax.jit(adding, static_argnums=(1, 2))`).
"""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxseq import _checks

COPY_NUM_SYMBOLS = 8  # data symbols 1..8; 0 is the blank, 9 the delimiter
COPY_NUM_CLASSES = COPY_NUM_SYMBOLS + 2
COPY_LENGTH = 10
TEMPORAL_ORDER_NUM_SYMBOLS = 8  # a b c d X Y B E
TEMPORAL_ORDER_NUM_CLASSES = 4  # XX XY YX YY


def adding(
    key: jax.Array, batch_size: int, seq_len: int
) -> tuple[Float[Array, "time batch 2"], Float[Array, " batch"]]:
    """The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015).

    Channel 0 holds values from U(0, 1); channel 1 is a marker, 1 at one step of
    the first half and one step of the second half. The target is the sum of the
    two marked values; predicting the mean (1) gives MSE 1/6.

    Args:
      key: PRNG key.
      batch_size: number of sequences B.
      seq_len: T ≥ 2.

    Returns:
      `(xs [T, B, 2], targets [B])`.
    """
    _checks.check_positive_int("batch_size", batch_size)
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2 (one marker in each half), got {seq_len}")
    k_v, k_a, k_b = jax.random.split(key, 3)
    values = jax.random.uniform(k_v, (seq_len, batch_size))
    half = seq_len // 2
    first = jax.random.randint(k_a, (batch_size,), 0, half)
    second = jax.random.randint(k_b, (batch_size,), half, seq_len)
    t = jnp.arange(seq_len)[:, None]
    marker = ((t == first[None]) | (t == second[None])).astype(values.dtype)
    return jnp.stack([values, marker], axis=-1), jnp.sum(values * marker, axis=0)


def copy_memory(
    key: jax.Array, batch_size: int, delay: int
) -> tuple[Float[Array, "time batch 10"], Int[Array, "time batch"]]:
    """The copy-memory task (Arjovsky, Shah, Bengio 2016).

    Inputs: 10 symbols drawn from {1..8}, then `delay - 1` blanks (0), the
    delimiter (9), and 10 more blanks: T = delay + 20 steps, one-hot over 10
    classes. Targets: blanks for the first delay + 10 steps, then the 10 symbols.
    A memoryless model that outputs blanks then uniform guesses scores
    cross-entropy `copy_memory_baseline(delay)` = 10·ln 8 / (delay + 20).

    Args:
      key: PRNG key.
      batch_size: number of sequences B.
      delay: T, the number of steps between the end of the pattern and the cue.

    Returns:
      `(xs [delay + 20, B, 10] one-hot, targets int [delay + 20, B])`.
    """
    _checks.check_positive_int("batch_size", batch_size)
    _checks.check_positive_int("delay", delay)
    symbols = jax.random.randint(key, (COPY_LENGTH, batch_size), 1, COPY_NUM_SYMBOLS + 1)
    blanks = jnp.zeros((delay - 1, batch_size), symbols.dtype)
    cue = jnp.full((1, batch_size), COPY_NUM_CLASSES - 1, symbols.dtype)
    tail = jnp.zeros((COPY_LENGTH, batch_size), symbols.dtype)
    inputs = jnp.concatenate([symbols, blanks, cue, tail])
    waiting = jnp.zeros((delay + COPY_LENGTH, batch_size), symbols.dtype)
    targets = jnp.concatenate([waiting, symbols])
    return jax.nn.one_hot(inputs, COPY_NUM_CLASSES), targets


def copy_memory_baseline(delay: int) -> float:
    """Cross-entropy per step of the memoryless strategy: 10·ln 8 / (delay + 20)."""
    return COPY_LENGTH * math.log(COPY_NUM_SYMBOLS) / (delay + 2 * COPY_LENGTH)


def temporal_order(
    key: jax.Array, batch_size: int, seq_len: int
) -> tuple[Float[Array, "time batch 8"], Int[Array, " batch"]]:
    """The temporal-order task (Hochreiter & Schmidhuber 1997, experiment 6a).

    A sequence starts with B and ends with E; in between are random distractors
    from {a, b, c, d}, except at t1 ∈ [0.1T, 0.2T] and t2 ∈ [0.5T, 0.6T], which
    hold X or Y. The class is the order of the two: XX=0, XY=1, YX=2, YY=3
    (chance: 25%). Symbol indices: a b c d X Y B E = 0..7, one-hot.

    Args:
      key: PRNG key.
      batch_size: number of sequences B.
      seq_len: T ≥ 10.

    Returns:
      `(xs [T, B, 8] one-hot, labels int [B])`.
    """
    _checks.check_positive_int("batch_size", batch_size)
    if seq_len < 10:
        raise ValueError(f"seq_len must be >= 10, got {seq_len}")
    k_d, k_1, k_2, k_c = jax.random.split(key, 4)
    symbols = jax.random.randint(k_d, (seq_len, batch_size), 0, 4)
    t1 = jax.random.randint(k_1, (batch_size,), seq_len // 10, seq_len // 5 + 1)
    t2 = jax.random.randint(k_2, (batch_size,), seq_len // 2, 3 * seq_len // 5 + 1)
    labels = jax.random.randint(k_c, (batch_size,), 0, TEMPORAL_ORDER_NUM_CLASSES)
    first, second = 4 + labels // 2, 4 + labels % 2  # X = 4, Y = 5
    t = jnp.arange(seq_len)[:, None]
    symbols = jnp.where(t == t1[None], first[None], symbols)
    symbols = jnp.where(t == t2[None], second[None], symbols)
    symbols = symbols.at[0].set(6).at[-1].set(7)
    return jax.nn.one_hot(symbols, TEMPORAL_ORDER_NUM_SYMBOLS), labels
