"""Prometheus view of one :class:`~sinks.writer.SinkWriter`: a collector read at scrape time.

``registry.register(SinkCollector(writer))``. Every family is listed in ``docs/sinks.md``;
no labels (one writer per worker), so the series count is fixed. The breaker state uses the
project's encoding (``egresswatch_breaker_state``): 0 closed, 1 half_open, 2 open.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sinks.writer import SinkWriter

__all__ = ["BREAKER_STATE_VALUES", "FAMILIES", "SinkCollector"]

BREAKER_STATE_VALUES: Final = {"closed": 0.0, "half_open": 1.0, "open": 2.0}

# (name, type, SinkStats field, help)
FAMILIES: Final = (
    ("egresswatch_sink_received_records_total", "counter", "received",
     "Records handed to the sink (after the severity filter)."),
    ("egresswatch_sink_filtered_events_total", "counter", "filtered",
     "Events below the sink's minimum severity, not stored."),
    ("egresswatch_sink_redelivered_records_total", "counter", "redelivered_skipped",
     "Kafka records seen again at an offset already taken or durable."),
    ("egresswatch_sink_objects_total", "counter", "flushed_objects",
     "Objects written to the store by flushes (checksum verified)."),
    ("egresswatch_sink_object_records_total", "counter", "flushed_records",
     "Records in the objects written to the store by flushes."),
    ("egresswatch_sink_spooled_batches_total", "counter", "spooled_batches",
     "Batches written to the local spool instead of the store."),
    ("egresswatch_sink_spooled_records_total", "counter", "spooled_records",
     "Records in the batches written to the spool."),
    ("egresswatch_sink_spool_refusals_total", "counter", "spool_refusals",
     "Batches the spool refused (full or failing): held in memory, back-pressure."),
    ("egresswatch_sink_drained_batches_total", "counter", "drained_batches",
     "Spooled batches uploaded to the store and removed from the spool."),
    ("egresswatch_sink_put_retries_total", "counter", "put_retries",
     "PUTs tried again after a transient error or a checksum mismatch."),
    ("egresswatch_sink_put_failures_total", "counter", "put_failures",
     "Objects that failed every try (they went to the spool)."),
    ("egresswatch_sink_checksum_mismatches_total", "counter", "checksum_mismatches",
     "PUTs whose checksum the store did not confirm (never acknowledged)."),
    ("egresswatch_sink_spool_damaged_segments_total", "counter", "quarantined_segments",
     "Spool segments found damaged (quarantined once replayed)."),
    ("egresswatch_sink_spool_lost_frames_total", "counter", "lost_spool_frames",
     "Spooled batches that failed their checksum and could not be replayed."),
    ("egresswatch_sink_spool_bytes", "gauge", "spool_bytes",
     "Bytes in the spool's segment files."),
    ("egresswatch_sink_spool_fill_ratio", "gauge", "spool_fill_ratio",
     "Spool bytes over its bound (0..1)."),
    ("egresswatch_sink_spool_batches", "gauge", "spool_pending_batches",
     "Batches waiting in the spool."),
    ("egresswatch_sink_upload_lag_seconds", "gauge", "upload_lag_s",
     "Age of the oldest record not yet in the store (in memory or spooled)."),
    ("egresswatch_sink_backpressure", "gauge", "backpressure",
     "1 while the sink asks the worker to stop consuming."),
    ("egresswatch_sink_stalled_batches", "gauge", "stalled_batches",
     "Closed batches neither in the store nor in the spool (spool refused them)."),
    ("egresswatch_sink_open_records", "gauge", "open_records",
     "Records in open batches, not yet due."),
)  # fmt: skip
_BREAKER: Final = "egresswatch_sink_breaker_state"


class SinkCollector(Collector):
    """Builds the sink's families from ``writer.stats()`` on each scrape."""

    def __init__(self, writer: SinkWriter) -> None:
        self._writer = writer

    def collect(self) -> Iterator[Metric]:
        stats = self._writer.stats()
        for name, kind, field, help_text in FAMILIES:
            value = float(getattr(stats, field))
            if kind == "counter":
                yield CounterMetricFamily(name.removesuffix("_total"), help_text, value=value)
            else:
                yield GaugeMetricFamily(name, help_text, value=value)
        yield GaugeMetricFamily(
            _BREAKER,
            "The store's circuit breaker: 0 closed, 1 half_open, 2 open.",
            value=BREAKER_STATE_VALUES[stats.breaker_state],
        )
