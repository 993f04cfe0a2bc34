"""Tasks as pure functions of a PRNG key, and (later) real-data loaders."""

from jaxseq.data.synthetic import (
    COPY_NUM_CLASSES,
    TEMPORAL_ORDER_NUM_CLASSES,
    TEMPORAL_ORDER_NUM_SYMBOLS,
    adding,
    copy_memory,
    copy_memory_baseline,
    temporal_order,
)

__all__ = [
    "COPY_NUM_CLASSES",
    "TEMPORAL_ORDER_NUM_CLASSES",
    "TEMPORAL_ORDER_NUM_SYMBOLS",
    "adding",
    "copy_memory",
    "copy_memory_baseline",
    "temporal_order",
]
