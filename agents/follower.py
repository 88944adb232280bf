"""Changelog follower: every worker holds every window cell, whichever worker owns it.

The cells table is partitioned: a worker's Faust table holds only the cells of the
partitions assigned to it. Queries and per-service alert rollups need all of them. The
table's changelog topic already carries every cell write (and a tombstone for every
expired cell), so each worker reads it whole, outside the consumer group (manual
assignment of all partitions, from the beginning), into a :class:`tables.query.SummaryView`.
Two workers therefore answer every query identically, and a worker answers for keys it
does not own. The delay is the changelog's (sub-second).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.logs import log_fields
from tables.aggregate import WindowAggregate
from tables.query import SummaryView

__all__ = ["ChangelogFollower"]

_log = logging.getLogger("egresswatch.follower")
_json = msgspec.json.Decoder()


class ChangelogFollower:
    """Tails the cells changelog into a SummaryView; knows each cell's partition."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        view: SummaryView,
        split_key: Callable[[str], tuple[str, int]],
        max_records: int = 5_000,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self.view = view
        self._split_key = split_key
        self._max_records = max_records
        # Table key -> changelog partition: where its cells live and who owns it.
        self.partition_of: dict[str, int] = {}
        self.caught_up = asyncio.Event()
        self.records = 0
        self.undecodable = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep following; the view must not freeze
                _log.warning(
                    "changelog follower restarting",
                    extra=log_fields(event="follower_error", error=repr(exc)),
                )
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        try:
            partitions = await self._wait_for_partitions(consumer)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            end = await consumer.end_offsets(partitions)
            pending = {tp for tp, offset in end.items() if offset > 0}
            if not pending:
                self.caught_up.set()
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=self._max_records)
                for tp, records in batches.items():
                    for record in records:
                        self._apply(tp.partition, record.key, record.value)
                    if tp in pending and records and records[-1].offset + 1 >= end[tp]:
                        pending.discard(tp)
                if not pending and not self.caught_up.is_set():
                    self.caught_up.set()
        finally:
            await consumer.stop()

    async def _wait_for_partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        # Faust creates the changelog topic when the worker starts; wait for it.
        while True:
            found = consumer.partitions_for_topic(self._topic)
            if found:
                return [TopicPartition(self._topic, p) for p in sorted(found)]
            await consumer._client.force_metadata_update()  # noqa: SLF001
            await asyncio.sleep(0.5)

    def _apply(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        self.records += 1
        if key is None:
            self.undecodable += 1
            return
        try:
            cell = self._split_key(_json.decode(key))
        except (msgspec.DecodeError, ValueError, TypeError):
            self.undecodable += 1
            return
        if value is None:
            self.view.delete(*cell)
            return
        try:
            aggregate = WindowAggregate.from_data(_json.decode(value))
        except (msgspec.DecodeError, ValueError, TypeError, KeyError):
            self.undecodable += 1
            return
        self.view.upsert(aggregate)
        self.partition_of[cell[0]] = partition
