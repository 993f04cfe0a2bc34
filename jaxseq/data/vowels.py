"""JapaneseVowels (UCI / UEA archive): variable-length multivariate speaker classification.

The `.ts` files ship inside the `aeon` package; a small parser reads them
without importing aeon (which would pull in numba).
"""

import functools
import os

import numpy as np

from jaxseq.data import _packages
from jaxseq.data.batching import Dataset, pad_sequences

VOWELS_NUM_CLASSES = 9
VOWELS_NUM_CHANNELS = 12


def read_ts(path: str | os.PathLike) -> tuple[list[np.ndarray], np.ndarray, tuple[str, ...]]:
    """Reads a classification problem in sktime/aeon `.ts` format.

    The format: `#` comment lines, `@key value` header lines (`@dimensions`,
    `@classLabel true l1 l2 ...`), then after `@data` one case a line: its
    channels separated by `:`, each a comma-separated list of values, and the
    class label last. Channels of one case must have the same length; lengths
    may differ between cases. Missing values (`?`) are not supported.

    Args:
      path: the `.ts` file.

    Returns:
      `(seqs, labels, classes)`: `seqs[i]` float32 `[t_i, channels]`, `labels`
      int32 `[N]` indexing `classes`, the class names in header order.
    """
    dimensions, classes, seqs, labels = None, None, [], []
    in_data = False
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            where = f"{os.fspath(path)}:{number}"
            if not line or line.startswith("#"):
                continue
            if not in_data:
                key, _, value = line.partition(" ")
                key = key.lower()
                if key == "@dimensions":
                    dimensions = int(value)
                elif key == "@classlabel":
                    flag, *classes = value.split()
                    if flag.lower() != "true" or not classes:
                        raise ValueError(f"{where}: expected '@classLabel true <labels>'")
                in_data = key == "@data"
                continue
            if classes is None:
                raise ValueError(f"{where}: data before an '@classLabel true ...' header")
            seq, label = _parse_case(line, where, dimensions)
            if label not in classes:
                raise ValueError(f"{where}: class label {label!r} is not one of {classes}")
            seqs.append(seq)
            labels.append(classes.index(label))
    if not seqs:
        raise ValueError(f"{os.fspath(path)}: no cases after '@data'")
    return seqs, np.array(labels, np.int32), tuple(classes or ())


def _parse_case(line: str, where: str, dimensions: int | None) -> tuple[np.ndarray, str]:
    *channels, label = line.split(":")
    if dimensions is not None and len(channels) != dimensions:
        raise ValueError(f"{where}: expected {dimensions} channels, got {len(channels)}")
    try:
        values = [np.array(c.split(","), np.float32) for c in channels]
    except ValueError as error:
        raise ValueError(f"{where}: values must be numbers ({error})") from None
    if len({len(v) for v in values}) != 1:
        lengths = [len(v) for v in values]
        raise ValueError(f"{where}: channels of one case differ in length: {lengths}")
    return np.stack(values, axis=-1), label.strip()


@functools.lru_cache(maxsize=4)
def _read_cached(path: str) -> tuple[list[np.ndarray], np.ndarray, tuple[str, ...]]:
    return read_ts(path)


def japanese_vowels() -> tuple[Dataset, Dataset]:
    """JapaneseVowels: which of 9 speakers uttered a vowel, from 12 LPC channels.

    The UCI / UEA archive's split: 270 training cases (30 per speaker) and 370
    test cases, lengths 7 to 29 steps. Both parts are zero padded to the same
    T = 29 (the longest case of either), with the true lengths in `lengths`.
    Classes "1".."9" become labels 0..8.

    Returns:
      `(train, test)` Datasets: `xs float32 [N, 29, 12]`, `lengths int32 [N]`
      in 7..29, `ys int32 [N]` in 0..8.

    References:
      M. Kudo, J. Toyama, M. Shimbo. Multidimensional curve classification using
      passing-through regions. Pattern Recognition Letters 20 (1999).

    Raises:
      ImportError: aeon is not installed (`pip install 'jaxseq[data]'`).
    """
    parts = []
    for split in ("TRAIN", "TEST"):
        path = _packages.package_file(
            "aeon",
            "datasets",
            "data",
            "JapaneseVowels",
            f"JapaneseVowels_{split}.ts",
            distribution="aeon",
            what="jaxseq.data.japanese_vowels",
        )
        parts.append(_read_cached(str(path)))
    max_len = max(len(s) for seqs, _, _ in parts for s in seqs)
    train, test = (
        Dataset(*pad_sequences(seqs, max_len), labels.copy()) for seqs, labels, _ in parts
    )
    return train, test
