"""KafkaLiveFeed: every partition of the probe and alerts topics, live, into a LiveHub.

The Faust consumer group splits the probe topic between workers, so a worker's own agents
see only some partitions. A WebSocket client connected to any worker must see all events,
so each worker runs this second, group-less consumer: it assigns itself *every* partition
of the probe topic and of the alerts topic, starts at the latest offsets (a live view has
no history; a restart resumes at the end, never replays) and commits nothing.

Per record: a batch envelope is decoded and validated (``pipeline.envelope.decode_batch``),
its valid events become ``event`` messages; an alert record (``tables.alerting``) becomes an
``alert`` message. Invalid records and events are counted and skipped (the ingest agent
dead-letters them). While no client is connected, probe records are read and skipped
undecoded.

Alert records are few and always decoded: each also goes to the worker's
:class:`~api.alert_log.AlertLog` (``GET /v1/alerts``), connected clients or not. So that a
worker started after an alert fired still knows it, the alerts partitions start
``alert_history_s`` back (``offsets_for_times``) rather than at their end; the records up
to the end found at start go to the log only, never to clients (they are not live).

Bounded work (the live view must never cost the worker its pipeline):

- each poll returns at most ``max_records`` records (aiokafka's fetch sizes bound the bytes);
- at most ``max_events_per_s`` events are decoded and fanned out (a token bucket, burst of
  one second). Beyond it, whole records are skipped after reading only their envelope,
  counted in ``shed``, and every client is told (``shed`` in its next ``dropped`` notice).
  Alerts are never shed;
- what one poll brings is published in chunks of ``_CHUNK`` messages with a yield to the
  event loop in between, so a burst never starves the HTTP server that shares the loop;
  and one wake-up per client per chunk, not per record. Errors restart the consumer after a
pause (at the latest offsets again: what was missed meanwhile is skipped, counted by
``restarts``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from api.alert_log import AlertLog
from api.live.hub import LiveHub
from api.live.protocol import LiveMessage, alert_message, event_message
from pipeline.envelope import BatchEnvelope, InvalidEnvelope, decode_batch
from pipeline.logs import log_fields
from tables.alerting import InvalidAlert, decode_alert

__all__ = ["KafkaLiveFeed"]

_log = logging.getLogger("egresswatch.live")
_CHUNK: Final = 500
_envelope = msgspec.json.Decoder(BatchEnvelope)


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
        max_events_per_s: float = 2_000.0,
        poll_timeout_ms: int = 200,
        restart_delay_s: float = 1.0,
        consumer_factory: Callable[..., Any] = AIOKafkaConsumer,
        clock: Callable[[], float] = time.monotonic,
        alert_log: AlertLog | None = None,
        alert_history_s: float = 86_400.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if max_records < 1 or not max_events_per_s > 0:
            raise ValueError("max_records >= 1 and max_events_per_s > 0")
        self.hub = hub
        self._bootstrap = bootstrap
        self.probe_topic = probe_topic
        self.alerts_topic = alerts_topic
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._restart_delay_s = restart_delay_s
        self._consumer_factory = consumer_factory
        self._clock = clock
        self.max_events_per_s = max_events_per_s
        self._tokens = max_events_per_s
        self._refilled_at = clock()
        self.assigned = asyncio.Event()
        """Set once every partition is assigned and positioned at its end."""
        self.records = 0
        self.skipped_records = 0
        self.events = 0
        self.alerts = 0
        self.invalid = 0
        self.shed = 0
        """Events skipped undecoded because the budget was spent (overload)."""
        self.restarts = 0
        self.alert_log = alert_log
        self.alert_history_s = alert_history_s
        self._wall_clock = wall_clock
        self._live_from: dict[TopicPartition, int] = {}
        """Alerts partitions: offsets below these are history (log only, not published)."""
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
        """Decode one record into hub messages (empty when invalid); alerts go to the log."""
        if value is None:
            return []
        if topic == self.alerts_topic:
            try:
                record = decode_alert(value)
            except InvalidAlert:
                self.invalid += 1
                return []
            self.alerts += 1
            if self.alert_log is not None:
                self.alert_log.record(record)
            return [alert_message(record)]
        if not self._take_budget(value):
            return []
        try:
            batch = decode_batch(value)
        except InvalidEnvelope:
            self.invalid += 1
            return []
        self.invalid += len(batch.invalid)
        self.events += len(batch.valid)
        self._tokens -= len(batch.valid) + len(batch.invalid)
        return [event_message(event) for event in batch.valid]

    def _take_budget(self, value: bytes) -> bool:
        """Spend tokens for this record's events; False (and shed) when none are left."""
        now = self._clock()
        rate = self.max_events_per_s
        self._tokens = min(rate, self._tokens + (now - self._refilled_at) * rate)
        self._refilled_at = now
        if self._tokens > 0:
            return True  # the whole record goes; the bucket may run into debt for it
        try:
            count = len(_envelope.decode(value).events)
        except msgspec.DecodeError:
            count = 0
        if count:
            self.shed += count
            self.hub.shed(count)
        return False

    def stats(self) -> dict[str, int]:
        return {
            "records": self.records,
            "skipped_records": self.skipped_records,
            "events": self.events,
            "alerts": self.alerts,
            "invalid": self.invalid,
            "shed": self.shed,
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
            await self._rewind_alerts(consumer, partitions)
            self.assigned.set()
            while True:
                batches = await consumer.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_records
                )
                messages: list[LiveMessage] = []
                for tp, records in batches.items():
                    self.records += len(records)
                    is_alerts = tp.topic == self.alerts_topic
                    if not len(self.hub) and not (is_alerts and self.alert_log is not None):
                        self.skipped_records += len(records)
                        continue
                    live_from = self._live_from.get(tp, 0) if is_alerts else 0
                    for record in records:
                        found = self.messages_of(tp.topic, record.value)
                        if record.offset >= live_from and len(self.hub):
                            messages.extend(found)
                        await asyncio.sleep(0)  # a big poll must not starve the HTTP server
                for start in range(0, len(messages), _CHUNK):
                    self.hub.publish(messages[start : start + _CHUNK])
                    await asyncio.sleep(0)
        finally:
            self.assigned.clear()
            await consumer.stop()

    async def _rewind_alerts(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Start the alerts partitions ``alert_history_s`` back, for the log (see above)."""
        alerts = [tp for tp in partitions if tp.topic == self.alerts_topic]
        if self.alert_log is None or not alerts:
            return
        self._live_from = {tp: await consumer.position(tp) for tp in alerts}
        since_ms = int((self._wall_clock() - self.alert_history_s) * 1000)
        found = await consumer.offsets_for_times(dict.fromkeys(alerts, max(0, since_ms)))
        for tp in alerts:
            at = found.get(tp)
            if at is not None and at.offset < self._live_from[tp]:
                consumer.seek(tp, at.offset)

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
