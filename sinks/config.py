"""The sink's settings, its figures and what a flush returns; the store's breaker config."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from pipeline.probe.breaker import BreakerConfig, BreakerStateName, CircuitBreaker
from pipeline.schema import SEVERITIES, Severity
from sinks.batcher import BatchLimits, TopicPartition
from sinks.keys import check_prefix
from sinks.records import DEFAULT_MIN_SEVERITY

__all__ = [
    "SINK_BREAKER_CONFIG",
    "FlushResult",
    "SinkConfig",
    "SinkStats",
    "store_breaker",
]

SINK_BREAKER_CONFIG: Final = BreakerConfig(
    failure_rate_threshold=0.5,
    sliding_window_size=6,
    minimum_number_of_calls=3,
    wait_duration_in_open_s=2.0,
    # One probe decides: an upload that works closes the breaker and the spool drains.
    permitted_calls_in_half_open=1,
    max_wait_in_half_open_s=60.0,
)


def store_breaker(
    config: BreakerConfig = SINK_BREAKER_CONFIG, *, clock: Callable[[], float] = time.monotonic
) -> CircuitBreaker:
    """The breaker in front of the object store (``pipeline.probe.breaker`` semantics)."""
    return CircuitBreaker("sink-store", config, clock=clock)


@dataclass(frozen=True, kw_only=True)
class SinkConfig:
    """How the sink batches and writes; the worker builds it once from its settings."""

    min_severity: Severity = DEFAULT_MIN_SEVERITY
    """Events at or above it are stored ("critical"; "info" stores every event)."""
    prefix: str = "egresswatch"
    compress: bool = False
    """gzip the objects (``.jsonl.gz``)."""
    limits: BatchLimits = field(default_factory=BatchLimits)
    put_attempts: int = 3
    """Tries per object per flush before it goes to the spool (checksum mismatch included)."""
    retry_backoff_s: float = 0.05
    spool_high_water: float = 0.9
    """Back-pressure on at this spool fill ratio ..."""
    spool_low_water: float = 0.5
    """... and off again at or under this one (and no batch stalled)."""
    drain_limit: int = 64
    """Spooled batches uploaded per :meth:`~sinks.writer.SinkWriter.tick`."""

    def __post_init__(self) -> None:
        if self.min_severity not in SEVERITIES:
            raise ValueError(f"min_severity must be one of {SEVERITIES}: {self.min_severity!r}")
        check_prefix(self.prefix)  # raises InvalidKey
        if self.put_attempts < 1 or self.drain_limit < 1 or self.retry_backoff_s < 0:
            raise ValueError("put_attempts and drain_limit >= 1, retry_backoff_s >= 0")
        if not 0.0 <= self.spool_low_water <= self.spool_high_water <= 1.0:
            raise ValueError("need 0 <= spool_low_water <= spool_high_water <= 1")


@dataclass
class FlushResult:
    """What one flush did. ``durable`` is the full map: ack every offset <= it, per partition."""

    durable: dict[TopicPartition, int]
    objects: int = 0
    """Objects put in the store by this call."""
    records: int = 0
    spooled: int = 0
    """Batches put in the spool by this call."""
    stalled: int = 0
    """Batches still queued: the spool refused one (full or failing); retried next call."""


@dataclass
class SinkStats:
    """Counters since start (``_total`` in Prometheus) and gauges as of the snapshot."""

    received: int = 0
    filtered: int = 0
    redelivered_skipped: int = 0
    flushed_objects: int = 0
    flushed_records: int = 0
    spooled_batches: int = 0
    spooled_records: int = 0
    spool_refusals: int = 0
    drained_batches: int = 0
    drained_objects: int = 0
    put_retries: int = 0
    put_failures: int = 0
    checksum_mismatches: int = 0
    # gauges, filled in by SinkWriter.stats()
    spool_bytes: int = 0
    spool_fill_ratio: float = 0.0
    spool_pending_batches: int = 0
    quarantined_segments: int = 0
    lost_spool_frames: int = 0
    upload_lag_s: float = 0.0
    """Age of the oldest record not yet in the store (in memory or in the spool)."""
    breaker_state: BreakerStateName = "closed"
    backpressure: bool = False
    stalled_batches: int = 0
    open_records: int = 0

    def snapshot(self, **gauges: object) -> SinkStats:
        return dataclasses.replace(self, **gauges)  # type: ignore[arg-type]
