"""The live feed fills the alert log (clients or not); its figures reach /metrics."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndTimestamp
from prometheus_client import CollectorRegistry

from api.alert_log import AlertLog
from api.live.collector import LiveCollector
from api.live.feed import KafkaLiveFeed
from api.live.hub import LiveHub
from tables.alerting import encode_alert
from tests.api.alert_records import T0, firing, follow_up


def _feed(log: AlertLog | None) -> KafkaLiveFeed:
    return KafkaLiveFeed(
        LiveHub(), bootstrap="127.0.0.1:1", probe_topic="p", alerts_topic="a", alert_log=log
    )


def test_alert_records_go_to_the_log_and_out_as_alert_messages() -> None:
    log = AlertLog(capacity=2, clock=lambda: T0 + 100)
    feed = _feed(log)
    fired = firing(1)
    (message,) = feed.messages_of("a", encode_alert(fired))
    assert message.kind == "alert"
    assert json.loads(message.text)["status"] == "firing"
    (message,) = feed.messages_of("a", encode_alert(follow_up(fired, "resolved", T0 + 50)))
    assert json.loads(message.text)["status"] == "resolved"  # transitions reach clients
    assert [e.state for e in log.query()] == ["resolved"]
    assert feed.messages_of("a", b"{not an alert") == [] and feed.invalid == 1
    assert len(log) == 1 and feed.alerts == 2


def test_the_collector_exports_the_log_against_its_bound() -> None:
    log = AlertLog(capacity=2, clock=lambda: T0 + 100)
    feed = _feed(log)
    registry = CollectorRegistry()
    registry.register(LiveCollector(feed.hub, feed))
    for n in (1, 2, 3):
        feed.messages_of("a", encode_alert(firing(n)))
    value = registry.get_sample_value
    assert value("egresswatch_alert_log_episodes", {"state": "firing"}) == 2
    assert value("egresswatch_alert_log_episodes", {"state": "resolved"}) == 0
    assert value("egresswatch_alert_log_capacity_episodes") == 2
    assert value("egresswatch_alert_log_dropped_episodes_total") == 1


def test_without_a_log_the_collector_has_no_alert_figures() -> None:
    registry = CollectorRegistry()
    feed = _feed(None)
    registry.register(LiveCollector(feed.hub, feed))
    assert registry.get_sample_value("egresswatch_alert_log_capacity_episodes") is None


# -- the feed's consumer loop over a fake consumer: history to the log, live to clients -------


class _Record:
    def __init__(self, offset: int, value: bytes, timestamp_ms: int) -> None:
        self.offset, self.value, self.timestamp = offset, value, timestamp_ms


class _FakeConsumer:
    """Just enough of AIOKafkaConsumer: one alerts partition, one probe partition."""

    def __init__(self, logs: dict[str, list[_Record]], **_: object) -> None:
        self.logs = logs
        self.positions: dict[Any, int] = {}
        self.polled = asyncio.Event()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = dict.fromkeys(partitions, 0)

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.positions[tp] = len(self.logs[tp.topic])

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def offsets_for_times(self, times: dict[TopicPartition, int]) -> dict[Any, Any]:
        found: dict[Any, Any] = {}
        for tp, ms in times.items():
            first = next((r.offset for r in self.logs[tp.topic] if r.timestamp >= ms), None)
            found[tp] = None if first is None else OffsetAndTimestamp(first, ms)
        return found

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, Any]:
        out = {}
        for tp, at in self.positions.items():
            records = self.logs[tp.topic][at : at + max_records]
            if records:
                out[tp] = records
                self.positions[tp] = at + len(records)
        self.polled.set()
        await asyncio.sleep(0.01)
        return out


async def test_history_goes_to_the_log_only_and_live_alerts_to_clients_too() -> None:
    now = T0 + 100_000
    old = firing(1, at=now - 90_000)  # older than the 24 h re-read: never seen
    recent = firing(2, at=now - 3_600)
    recent_done = follow_up(recent, "resolved", now - 3_000)
    logs: dict[str, list[_Record]] = {"a": [], "p": []}
    for record in (old, recent, recent_done):
        at_ms = int(record.evaluated_at * 1000)
        logs["a"].append(_Record(len(logs["a"]), encode_alert(record), at_ms))
    log = AlertLog(clock=lambda: now)
    hub = LiveHub()
    client = hub.connect()
    consumers: list[_FakeConsumer] = []

    def factory(**kwargs: object) -> _FakeConsumer:
        consumers.append(_FakeConsumer(logs, **kwargs))
        return consumers[-1]

    feed = KafkaLiveFeed(
        hub,
        bootstrap="127.0.0.1:1",
        probe_topic="p",
        alerts_topic="a",
        alert_log=log,
        consumer_factory=factory,
        wall_clock=lambda: now,
    )
    await feed.start()
    try:
        await asyncio.wait_for(feed.assigned.wait(), 5)
        while log.records_total < 2:  # both recent records, not the one before 24 h
            await asyncio.sleep(0.01)
        assert [(e.record.alert_id, e.state) for e in log.query()] == [
            (recent.alert_id, "resolved")
        ]
        assert client.queued_total == 0  # history is not live
        live = firing(3, at=now)
        logs["a"].append(_Record(len(logs["a"]), encode_alert(live), int(now * 1000)))
        while client.queued_total < 1:
            await asyncio.sleep(0.01)
        (message,) = client.buffer
        assert json.loads(message.text)["alert_id"] == live.alert_id
        assert [e.record.alert_id for e in log.query(state="firing")] == [live.alert_id]
    finally:
        await feed.stop()
