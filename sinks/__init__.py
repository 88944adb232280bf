"""egresswatch sinks: critical events and alerts as partitioned JSONL objects in RGW.

The worker's side of it (``docs/sinks.md``)::

    store = await open_store(endpoint, access_key=..., secret_key=..., bucket=...)
    writer = SinkWriter(store, Spool(spool_dir, max_bytes=...), store_breaker(), config=...)
    writer.add_events(topic, partition, offset, events)   # per Kafka record, even if empty
    result = await writer.tick()                           # on a timer: flush due + drain
    ack every held record with offset <= result.durable[(topic, partition)]
    if writer.backpressure: await writer.wait_writable()   # stop consuming meanwhile

Modules: :mod:`sinks.keys` (object key convention), :mod:`sinks.jsonl` (line format),
:mod:`sinks.records`, :mod:`sinks.batcher`, :mod:`sinks.spool`, :mod:`sinks.stores`
(``ObjectStore``, ``LocalStore``, ``open_store``), :mod:`sinks.s3` (``S3Store``),
:mod:`sinks.writer`, :mod:`sinks.metrics` (``SinkCollector``), :mod:`sinks.errors`.
"""

from sinks.batcher import Batch, BatchLimits, TopicPartition
from sinks.config import SINK_BREAKER_CONFIG, FlushResult, SinkConfig, SinkStats, store_breaker
from sinks.errors import (
    ChecksumMismatch,
    InvalidKey,
    NoSuchObject,
    SinkError,
    SinkRejected,
    SinkUnavailable,
    SpoolCorrupt,
    SpoolError,
    SpoolFull,
)
from sinks.keys import ObjectKey, hour_folder, parse_key
from sinks.records import SinkRecord, alert_record, event_record, keeps
from sinks.spool import Spool, SpoolEntry
from sinks.stores import LocalStore, ObjectStore, open_store
from sinks.writer import SinkWriter

__all__ = [
    "SINK_BREAKER_CONFIG",
    "Batch",
    "BatchLimits",
    "ChecksumMismatch",
    "FlushResult",
    "InvalidKey",
    "LocalStore",
    "NoSuchObject",
    "ObjectKey",
    "ObjectStore",
    "SinkConfig",
    "SinkError",
    "SinkRecord",
    "SinkRejected",
    "SinkStats",
    "SinkUnavailable",
    "SinkWriter",
    "Spool",
    "SpoolCorrupt",
    "SpoolEntry",
    "SpoolError",
    "SpoolFull",
    "TopicPartition",
    "alert_record",
    "event_record",
    "hour_folder",
    "keeps",
    "open_store",
    "parse_key",
    "store_breaker",
]
