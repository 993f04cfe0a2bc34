"""scikit-learn's handwritten digits read as sequences (rows or pixels)."""

import functools

import numpy as np

from jaxseq import _checks
from jaxseq.data import _packages
from jaxseq.data.batching import Dataset

DIGITS_NUM_CLASSES = 10
_SIDE = 8  # the images are 8 × 8, values 0..16


@functools.lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    images = (images / 16.0).astype(np.float32)
    labels = labels.astype(np.int32)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")


def digits(
    mode: str = "rows", *, test_fraction: float = 0.25, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """The 1797 8×8 digit images of `sklearn.datasets.load_digits` as sequences.

    Pixel values 0..16 are scaled to [0, 1]. `mode="rows"` reads an image top to
    bottom, one row of 8 pixels a step (T = 8, F = 8); `mode="pixels"` reads it
    pixel by pixel in row-major order (T = 64, F = 1), a longer-range task.
    Every sequence has the full length. The split is scikit-learn's
    `train_test_split(random_state=seed, stratify=labels)`: deterministic, and
    each class keeps its share in both parts. Examples stay in the original
    order within each part.

    Args:
      mode: "rows" or "pixels".
      test_fraction: the share of examples in the test part, in (0, 1).
      seed: the split's seed, an int ≥ 0.

    Returns:
      `(train, test)` Datasets: `xs float32 [N, T, F]`, `lengths int32 [N]`,
      `ys int32 [N]` in 0..9.

    Raises:
      ImportError: scikit-learn is not installed (`pip install 'jaxseq[data]'`).
    """
    _checks.check_option("mode", mode, ("rows", "pixels"))
    _check_fraction("test_fraction", test_fraction)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    _packages.require("sklearn", distribution="scikit-learn", what="jaxseq.data.digits")
    from sklearn.model_selection import train_test_split

    images, labels = _load()
    steps, features = (_SIDE, _SIDE) if mode == "rows" else (_SIDE * _SIDE, 1)
    xs = images.reshape(len(images), steps, features)
    train, test = train_test_split(
        np.arange(len(images)), test_size=test_fraction, random_state=int(seed), stratify=labels
    )
    lengths = np.full(len(images), steps, np.int32)

    def subset(index: np.ndarray) -> Dataset:
        index = np.sort(index)
        return Dataset(xs[index], lengths[index], labels[index])

    return subset(train), subset(test)
