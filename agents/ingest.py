"""Ingest: one batch record in -> dead letters out, window cells updated, metrics fed.

:class:`IngestProcessor` is plain synchronous code (no Faust, no Kafka) so that it can be
tested and benchmarked on its own; :func:`agents.register` wraps it in a Faust agent.

Per record: decode the envelope (an undecodable record is one dead letter, whole); validate
each event alone (an invalid one is a dead letter with its index; its valid neighbours go
on); put each valid event in its 10 s cell by event time. An event older than the
retention horizon cannot be aggregated any more (its cell is gone): it is counted as late
and dead-lettered with reason ``late_beyond_retention``, never dropped silently. An event
late by less than that is aggregated into its (older) cell and counted as late.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agents.deadletter import encode_dead_letter
from pipeline.envelope import DecodedBatch, InvalidEnvelope, decode_batch
from pipeline.schema import ProbeEvent
from pipeline.validation import EventValidator
from tables.aggregate import WindowAggregate, aggregate_events
from tables.metrics import EgressMetrics
from tables.windows import RETENTION_S, Watermark, bucket_start, is_expired

__all__ = ["IngestProcessor", "IngestResult", "cell_key", "split_cell_key"]


def cell_key(key: str, bucket: int) -> str:
    """Table key of one window cell. ``@`` is the last one: a route may contain ``@``."""
    return f"{key}@{bucket}"


def split_cell_key(cell: str) -> tuple[str, int]:
    key, _, bucket = cell.rpartition("@")
    return key, int(bucket)


@dataclass
class IngestResult:
    """What one record produced: cells to merge into the table, dead letters to send."""

    cells: dict[tuple[str, int], WindowAggregate] = field(default_factory=dict)
    dead_letters: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, value)
    valid: int = 0
    late: int = 0
    events: list[ProbeEvent] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    """The bytes each of ``events`` arrived as (index for index): what the sink stores."""


def _envelope_positions(batch: DecodedBatch) -> Sequence[int]:
    """Where each valid event sat in its envelope (dead letters name that index)."""
    if not batch.invalid:
        return range(len(batch.valid))
    invalid = {index for index, _, _ in batch.invalid}
    return [i for i in range(len(batch.valid) + len(invalid)) if i not in invalid]


class IngestProcessor:
    """Decode, validate and aggregate batch records; holds per-partition watermarks."""

    def __init__(
        self,
        *,
        metrics: EgressMetrics,
        validator: EventValidator | None = None,
        watermark: Watermark | None = None,
        retention_s: int = RETENTION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.validator = validator or EventValidator("ingest")
        self.watermark = watermark or Watermark()
        self._retention_s = retention_s
        self._clock = clock
        self.records = 0
        self.dead_letters = 0

    def process(self, value: bytes, *, topic: str, partition: int, offset: int) -> IngestResult:
        self.records += 1
        result = IngestResult()
        try:
            batch = decode_batch(value)
        except InvalidEnvelope as exc:
            self._dead_letter(result, exc.reason, exc.detail, value, topic, partition, offset, -1)
            self.validator.reject(exc, topic=topic, partition=partition, offset=offset, index=-1)
            return result
        for index, original, error in batch.invalid:
            self.validator.reject(
                error, topic=topic, partition=partition, offset=offset, index=index
            )
            self._dead_letter(
                result, error.reason, error.detail, original, topic, partition, offset, index
            )
        watermark = self.watermark
        # Lateness is judged against the watermark *before* this record: events of one batch
        # span its flush interval and are not late relative to each other.
        partition_mark = watermark.partition_time(partition)
        if batch.valid:
            watermark.observe(partition, max(event.started_at for event in batch.valid))
        stream_time = watermark.stream_time()
        for index, event, received in zip(
            _envelope_positions(batch), batch.valid, batch.valid_raw, strict=True
        ):
            bucket = bucket_start(event.started_at)
            if stream_time is not None and is_expired(bucket, stream_time, self._retention_s):
                self.metrics.inc_late(event.service)
                self._dead_letter(
                    result,
                    "late_beyond_retention",
                    f"started_at {event.started_at} is older than the {self._retention_s} s "
                    f"retention behind stream time {stream_time}",
                    received,
                    topic,
                    partition,
                    offset,
                    index,
                )
                result.late += 1
                continue
            result.events.append(event)
            result.lines.append(received)
        result.cells = aggregate_events(result.events, watermark=partition_mark)
        for cell in result.cells.values():
            if cell.late_events:
                result.late += cell.late_events
                self.metrics.inc_late(cell.key.partition("|")[0], cell.late_events)
        result.valid = len(result.events)
        self.metrics.observe_many(result.events)
        return result

    def _dead_letter(
        self,
        result: IngestResult,
        reason: str,
        detail: str,
        original: bytes,
        topic: str,
        partition: int,
        offset: int,
        index: int,
    ) -> None:
        self.dead_letters += 1
        self.metrics.inc_dead_letter(reason)
        result.dead_letters.append(
            (
                reason.encode(),
                encode_dead_letter(
                    reason=reason,
                    detail=detail,
                    original=original,
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    index=index,
                    rejected_at=self._clock(),
                ),
            )
        )
