"""Batches per (topic, partition), closed by count, bytes, age or idleness.

One open :class:`Batch` per Kafka partition collects the sink records of consecutive Kafka
records. A batch closes when, after an :meth:`Batcher.add`, it holds ``max_records``
records or ``max_bytes`` bytes (these two are deterministic: the same records from the same
start offset close at the same place), or, in :meth:`Batcher.due`, when it has been open
``max_age_s`` or has had no add for ``idle_s``: the idle rule is what makes a quiet
partition flush soon instead of holding its last records (and their commit) until more come.

A Kafka record is never split across batches, whatever its size: all its records go into
the open batch, which may then pass a limit and close. :func:`render_objects` turns a
closed batch into objects, one per (kind, service, hour) folder (``sinks.keys``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from sinks.jsonl import encode_jsonl
from sinks.keys import ObjectKey, hour_of
from sinks.records import SinkRecord

__all__ = [
    "Batch",
    "BatchLimits",
    "Batcher",
    "CloseReason",
    "RenderedObject",
    "TopicPartition",
    "render_objects",
]

TopicPartition = tuple[str, int]
CloseReason = Literal["records", "bytes", "age", "idle", "forced"]


@dataclass(frozen=True)
class BatchLimits:
    """When a batch closes. Sizes count the JSONL bytes before compression."""

    max_records: int = 10_000
    max_bytes: int = 8 * 2**20
    max_age_s: float = 60.0
    idle_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_bytes < 1:
            raise ValueError("max_records and max_bytes must be >= 1")
        if self.max_age_s <= 0 or self.idle_s <= 0:
            raise ValueError("max_age_s and idle_s must be > 0")


@dataclass(eq=False)
class Batch:
    """Consecutive Kafka records of one partition: ``first_offset`` .. ``last_offset``."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    opened_at: float
    last_added_at: float
    records: list[tuple[int, SinkRecord]] = field(default_factory=list)
    """(Kafka offset, record), in the order added."""
    nbytes: int = 0
    closed_by: CloseReason | None = None

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)


@dataclass(frozen=True)
class RenderedObject:
    key: str
    data: bytes
    records: int
    md5: bytes
    """MD5 of ``data``, taken as it is rendered (in the writer's thread: hashlib lets go of
    the GIL), and sent as ``Content-MD5`` with the PUT."""


def render_objects(batch: Batch, *, prefix: str, compress: bool) -> list[RenderedObject]:
    """One object per (kind, service, hour) of the batch, named by its first record's offset."""
    groups: dict[tuple[str, str, int], list[tuple[int, SinkRecord]]] = {}
    for offset, record in batch.records:
        folder = (record.kind, record.service, hour_of(record.at))
        groups.setdefault(folder, []).append((offset, record))
    objects = []
    for (_, _, hour), members in groups.items():
        first_offset, first = members[0]
        key = ObjectKey(
            kind=first.kind,
            service=first.service,
            hour=hour,
            topic=batch.topic,
            partition=batch.partition,
            first_offset=first_offset,
            gzip=compress,
            prefix=prefix,
        ).render()
        data = encode_jsonl((record.line for _, record in members), compress=compress)
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        objects.append(RenderedObject(key, data, len(members), md5))
    return objects


class Batcher:
    """The open batch of every partition; closed batches are handed back to the caller."""

    def __init__(self, limits: BatchLimits | None = None) -> None:
        self.limits = limits or BatchLimits()
        self._open: dict[TopicPartition, Batch] = {}

    def add(
        self, topic: str, partition: int, offset: int, records: Sequence[SinkRecord], now: float
    ) -> Batch | None:
        """Add one Kafka record's sink records; returns the batch if this closed it."""
        tp = (topic, partition)
        batch = self._open.get(tp)
        if batch is None:
            batch = Batch(topic, partition, offset, offset, now, now)
            self._open[tp] = batch
        batch.last_offset = offset
        batch.last_added_at = now
        batch.records.extend([(offset, record) for record in records])
        batch.nbytes += sum([len(record.line) for record in records]) + len(records)
        if len(batch.records) >= self.limits.max_records:
            return self._close(tp, "records")
        if batch.nbytes >= self.limits.max_bytes:
            return self._close(tp, "bytes")
        return None

    def due(self, now: float) -> list[Batch]:
        """Close and return the batches open ``max_age_s`` or idle ``idle_s`` by ``now``."""
        closed = []
        for tp, batch in list(self._open.items()):
            if now - batch.opened_at >= self.limits.max_age_s:
                closed.append(self._close(tp, "age"))
            elif now - batch.last_added_at >= self.limits.idle_s:
                closed.append(self._close(tp, "idle"))
        return closed

    def close(self, tp: TopicPartition) -> Batch | None:
        """Close the open batch of ``tp`` now (flush before a rebalance or shutdown)."""
        return self._close(tp, "forced") if tp in self._open else None

    def discard(self, tp: TopicPartition) -> Batch | None:
        """Forget the open batch of ``tp`` unflushed (its records will be delivered again)."""
        return self._open.pop(tp, None)

    def get(self, tp: TopicPartition) -> Batch | None:
        return self._open.get(tp)

    def open_batches(self) -> list[Batch]:
        return list(self._open.values())

    def _close(self, tp: TopicPartition, reason: CloseReason) -> Batch:
        batch = self._open.pop(tp)
        batch.closed_by = reason
        return batch
