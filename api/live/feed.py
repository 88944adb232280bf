"""KafkaLiveFeed: every partition of the probe and alerts topics, live, into a LiveHub.

The Faust consumer group splits the probe topic between workers, so a worker's own agents
see only some partitions. A WebSocket client connected to any worker must see all events,
so each worker runs this second, group-less consumer: it assigns itself *every* partition
of the probe topic and of the alerts topic, starts at the latest offsets (a live view has
no history; a restart resumes at the end, never replays) and commits nothing.

Per record: a batch envelope is decoded and validated (``pipeline.envelope.decode_batch``),
its valid events become ``event`` messages; an alert record (``tables.alerting``) becomes an
``alert`` message. Invalid records and events are counted and skipped (the ingest agent
dead-letters them). While no client is connected, records are read and skipped undecoded.

Bounded work: each poll returns at most ``max_records`` records (and aiokafka's fetch
sizes bound the bytes); the loop yields to the event loop after every record, so a burst
never starves the HTTP server that shares the loop. Errors restart the consumer after a
pause (at the latest offsets again: what was missed meanwhile is skipped, counted by
``restarts``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from api.live.hub import LiveHub
from api.live.protocol import LiveMessage, alert_message, event_message
from pipeline.envelope import InvalidEnvelope, decode_batch
from pipeline.logs import log_fields
from tables.alerting import InvalidAlert, decode_alert

__all__ = ["KafkaLiveFeed"]

_log = logging.getLogger("egresswatch.live")


class KafkaLiveFeed:
    """Tails the probe and alerts topics (all partitions, no group) into ``hub``."""

    def __init__(
        self,
        hub: LiveHub,
        *,
        bootstrap: str,
        probe_topic: str,
        alerts_topic: str,
        max_records: int = 200,
        poll_timeout_ms: int = 200,
        restart_delay_s: float = 1.0,
        consumer_factory: Callable[..., Any] = AIOKafkaConsumer,
    ) -> None:
        self.hub = hub
        self._bootstrap = bootstrap
        self.probe_topic = probe_topic
        self.alerts_topic = alerts_topic
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._restart_delay_s = restart_delay_s
        self._consumer_factory = consumer_factory
        self.assigned = asyncio.Event()
        """Set once every partition is assigned and positioned at its end."""
        self.records = 0
        self.skipped_records = 0
        self.events = 0
        self.alerts = 0
        self.invalid = 0
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def messages_of(self, topic: str, value: bytes | None) -> list[LiveMessage]:
        """Decode one record into hub messages (empty when invalid)."""
        if value is None:
            return []
        if topic == self.alerts_topic:
            try:
                record = decode_alert(value)
            except InvalidAlert:
                self.invalid += 1
                return []
            self.alerts += 1
            return [alert_message(record)]
        try:
            batch = decode_batch(value)
        except InvalidEnvelope:
            self.invalid += 1
            return []
        self.invalid += len(batch.invalid)
        self.events += len(batch.valid)
        return [event_message(event) for event in batch.valid]

    def stats(self) -> dict[str, int]:
        return {
            "records": self.records,
            "skipped_records": self.skipped_records,
            "events": self.events,
            "alerts": self.alerts,
            "invalid": self.invalid,
            "restarts": self.restarts,
        }

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a live view must come back by itself
                self.assigned.clear()
                self.restarts += 1
                _log.warning(
                    "live feed restarting",
                    extra=log_fields(event="live_feed_error", error=repr(exc)),
                )
                await asyncio.sleep(self._restart_delay_s)

    async def _follow(self) -> None:
        consumer = self._consumer_factory(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            client_id="egresswatch-live-feed",
        )
        await consumer.start()
        try:
            partitions = await self._partitions(consumer)
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            for tp in partitions:  # resolve the end offsets now, not at the first record
                await consumer.position(tp)
            self.assigned.set()
            while True:
                batches = await consumer.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_records
                )
                for tp, records in batches.items():
                    for record in records:
                        self.records += 1
                        if not len(self.hub):
                            self.skipped_records += 1
                            continue
                        messages = self.messages_of(tp.topic, record.value)
                        if messages:
                            self.hub.publish(messages)
                        await asyncio.sleep(0)
        finally:
            self.assigned.clear()
            await consumer.stop()

    async def _partitions(self, consumer: Any) -> list[TopicPartition]:
        """Every partition of both topics (waits for topics that do not exist yet)."""
        while True:
            found: list[TopicPartition] = []
            missing = False
            for topic in (self.probe_topic, self.alerts_topic):
                numbers = consumer.partitions_for_topic(topic)
                if not numbers:
                    missing = True
                    continue
                found.extend(TopicPartition(topic, p) for p in sorted(numbers))
            if not missing:
                return found
            await consumer._client.force_metadata_update()  # noqa: SLF001
            await asyncio.sleep(0.5)
