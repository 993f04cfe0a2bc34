"""Fixed-size data sets in memory: padding + lengths, random and ordered batches.

A `Dataset` is batch-major (`xs [N, T, F]`, as loaders read it); every batch it
yields is time-major (`xs [T, B, F]`, as `jaxseq.unroll` takes it). Sequences
shorter than `T` are zero padded and their true lengths travel in `lengths`, so
models pass `lengths=` to `unroll` and padded steps never count.
"""

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float, Int

from jaxseq import _checks


class Dataset(NamedTuple):
    """A labelled data set held in memory, batch-major (a pytree of arrays).

    Attributes:
      xs: `float32 [N, T, F]`, zero padded after each sequence's length.
      lengths: `int32 [N]`, the number of valid steps of each sequence (<= T).
      ys: `[N]` integer class labels, or `[N, ...]` regression targets.
    """

    xs: Any
    lengths: Any
    ys: Any


class Batch(NamedTuple):
    """A time-major batch: `xs [T, B, F]`, `lengths int32 [B]`, `ys [B, ...]`."""

    xs: Any
    lengths: Any
    ys: Any


def pad_sequences(
    seqs: Sequence[Any], max_len: int | None = None
) -> tuple[Float[np.ndarray, "n time features"], Int[np.ndarray, " n"]]:
    """Stacks variable-length sequences into one zero-padded array.

    Sequences are never truncated: a `max_len` shorter than the longest
    sequence is an error, so no data is lost silently.

    Args:
      seqs: N ≥ 1 arrays `[t_i, F]` with the same number of features F.
      max_len: the padded length T ≥ max t_i; None pads to the longest sequence.

    Returns:
      `(xs float32 [N, T, F], lengths int32 [N])` with `xs[i, :t_i] = seqs[i]`
      and zeros after.
    """
    if isinstance(seqs, np.ndarray | jax.Array) or not isinstance(seqs, Sequence):
        raise TypeError(
            f"seqs must be a list of [time, features] arrays, got {type(seqs).__name__}"
        )
    if not seqs:
        raise ValueError("seqs must hold at least one sequence, got an empty list")
    arrays = [np.asarray(s) for s in seqs]
    for i, a in enumerate(arrays):
        if a.ndim != 2:
            raise ValueError(
                f"seqs[{i}] must have shape [time, features] (rank 2), got shape {a.shape}"
            )
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise TypeError(f"seqs[{i}] must hold numbers, got dtype {a.dtype}")
        if a.shape[1] != arrays[0].shape[1]:
            raise ValueError(
                f"seqs[{i}] has {a.shape[1]} features but seqs[0] has {arrays[0].shape[1]}: "
                "all sequences need the same feature size"
            )
    lengths = np.array([a.shape[0] for a in arrays], np.int32)
    longest = int(lengths.max())
    if max_len is None:
        max_len = longest
    _checks.check_positive_int("max_len", max_len)
    if max_len < longest:
        raise ValueError(
            f"max_len must be >= the longest sequence ({longest} steps) since sequences "
            f"are never truncated, got {max_len}"
        )
    xs = np.zeros((len(arrays), max_len, arrays[0].shape[1]), np.float32)
    for i, a in enumerate(arrays):
        xs[i, : a.shape[0]] = a
    return xs, lengths


def _num_examples(ds: Dataset) -> int:
    """Checks the shapes of a `Dataset` (at trace time) and returns N."""
    if not isinstance(ds, Dataset):
        raise TypeError(f"ds must be a jaxseq.data.Dataset, got {type(ds).__name__}")
    xs_shape = tuple(np.shape(ds.xs))
    if len(xs_shape) != 3:
        raise ValueError(f"ds.xs must have shape [N, time, features], got shape {xs_shape}")
    n = xs_shape[0]
    if tuple(np.shape(ds.lengths)) != (n,):
        raise ValueError(f"ds.lengths must have shape ({n},), got {tuple(np.shape(ds.lengths))}")
    ys_shape = tuple(np.shape(ds.ys))
    if not ys_shape or ys_shape[0] != n:
        raise ValueError(f"ds.ys must have shape ({n}, ...), got {ys_shape}")
    if n == 0:
        raise ValueError("ds must hold at least one example, got N = 0")
    return n


def sample_batch(ds: Dataset, key: jax.Array, batch_size: int, *, replace: bool = True) -> Batch:
    """Draws a random time-major batch; jits with `batch_size` static.

    `jax.jit(sample_batch, static_argnums=2)(ds, key, 32)` turns the NumPy
    arrays of `ds` into device arrays once per call; convert it once with
    `as_jax(ds)` to keep it on the device.

    Args:
      ds: the data set, `xs [N, T, F]`.
      key: PRNG key that picks the examples.
      batch_size: B ≥ 1.
      replace: draw uniformly with replacement (default), or B distinct
        examples (then B ≤ N).

    Returns:
      `Batch(xs [T, B, F], lengths int32 [B], ys [B, ...])` of the chosen examples.
    """
    _checks.check_positive_int("batch_size", batch_size)
    n = _num_examples(ds)
    if not replace and batch_size > n:
        raise ValueError(
            f"batch_size must be <= the number of examples ({n}) when replace=False, "
            f"got {batch_size}"
        )
    index = jax.random.choice(key, n, (batch_size,), replace=replace)
    xs = jnp.asarray(ds.xs)[index]
    return Batch(jnp.swapaxes(xs, 0, 1), jnp.asarray(ds.lengths)[index], jnp.asarray(ds.ys)[index])


def batches(ds: Dataset, batch_size: int) -> Iterator[Batch]:
    """Yields every example once, in order, as time-major batches (for evaluation).

    Args:
      ds: the data set, `xs [N, T, F]`.
      batch_size: B ≥ 1; the last batch holds the remaining N mod B examples
        when B does not divide N.

    Returns:
      An iterator of `Batch(xs [T, b, F], lengths [b], ys [b, ...])`, arrays of
      the same kind (NumPy or jax) as `ds`.
    """
    _checks.check_positive_int("batch_size", batch_size)
    n = _num_examples(ds)
    return (_slice(ds, start, start + batch_size) for start in range(0, n, batch_size))


def _slice(ds: Dataset, start: int, stop: int) -> Batch:
    return Batch(ds.xs[start:stop].swapaxes(0, 1), ds.lengths[start:stop], ds.ys[start:stop])


def full_batch(ds: Dataset) -> Batch:
    """The whole data set as one time-major batch (small evaluation sets).

    Args:
      ds: the data set, `xs [N, T, F]`.

    Returns:
      `Batch(xs [T, N, F], lengths [N], ys [N, ...])`.
    """
    return _slice(ds, 0, _num_examples(ds))


def as_jax(ds: Dataset) -> Dataset:
    """The same data set with device arrays, for `sample_batch` inside `jit`."""
    return Dataset(*(jnp.asarray(a) for a in ds))
