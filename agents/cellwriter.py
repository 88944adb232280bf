"""Coalesced table writes: merge into the local cells now, ship them to the changelog later.

A Faust table write sends the whole value to the changelog at once, and one record of 500
events touches ~25 cells: a changelog write per cell per record was the worker's largest
cost. Here the agent merges each record's cells into the table's store directly and marks
them dirty; :meth:`CellWriter.flush` (a timer, every 0.5 s) sends one changelog write per
dirty cell. Offsets stay safe: a source record becomes ackable only once a flush covering
it has handed its cells to the producer (Faust flushes the producer before it commits).
"""

from __future__ import annotations

from typing import Any

from agents.ingest import cell_key
from tables.aggregate import WindowAggregate

__all__ = ["CellWriter"]

TopicPartition = tuple[str, int]


class CellWriter:
    """The one writer of the cells table (ingest merges, flush ships, expiry deletes)."""

    def __init__(self, table: Any, source_topic: str) -> None:
        self._table = table
        self._source_topic = source_topic
        self._dirty: dict[str, int] = {}  # cell name -> changelog partition
        self._merged: dict[TopicPartition, int] = {}  # highest source offset merged
        self._flushed: dict[TopicPartition, int] = {}  # ... and shipped to the changelog
        self.changelog_writes = 0

    def merge(
        self, topic: str, partition: int, offset: int, cells: dict[tuple[str, int], WindowAggregate]
    ) -> None:
        data = self._table.data
        dirty = self._dirty
        for (key, bucket), fresh in cells.items():
            name = cell_key(key, bucket)
            current: WindowAggregate | None = data.get(name)
            if current is None:
                data[name] = fresh
            else:
                current.merge(fresh)
            # The changelog partition is the source partition (Faust's co-partitioning).
            dirty[name] = partition
        self._merged[(topic, partition)] = offset

    def flush(self) -> int:
        """Send one changelog write per dirty cell; returns how many."""
        data = self._table.data
        sent = 0
        for name, partition in self._dirty.items():
            value = data.get(name)
            if value is not None:
                self._table.send_changelog(partition, name, value)
                sent += 1
        self._dirty.clear()
        self._flushed.update(self._merged)
        self.changelog_writes += sent
        return sent

    def delete(self, name: str, partition: int) -> None:
        """Expire one cell: drop it locally and tombstone it in the changelog."""
        self._table.data.pop(name, None)
        self._dirty.pop(name, None)
        self._table.send_changelog(partition, name, None)

    def ackable(self, durable: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Cap the sink's durable offsets of the source topic at what the changelog has."""
        out = {}
        for tp, offset in durable.items():
            if tp[0] == self._source_topic:
                offset = min(offset, self._flushed.get(tp, -1))
            out[tp] = offset
        return out

    def forget(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self._merged.pop(tp, None)
            self._flushed.pop(tp, None)
