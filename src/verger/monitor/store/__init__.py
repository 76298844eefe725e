"""The embedded metric store: series, compressed blocks, retention and rollups."""

from verger.monitor.store.store import (
    BLOCK,
    ROLLUP,
    Buckets,
    Matcher,
    MetricStore,
    Series,
    StoreError,
)

__all__ = [
    "BLOCK",
    "ROLLUP",
    "Buckets",
    "Matcher",
    "MetricStore",
    "Series",
    "StoreError",
]
