"""WebSocket clients against a real worker's live feed on the real Kafka: a normal client
records events with their delay, a slow one gets ``dropped`` notices, both reconnect after
the worker is killed and restarted."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.campaign.raw import WsClientSummary, WsMessage, read_jsonl
from pipeline.campaign.wsclients import WsClients, ws_url
from pipeline.schema import ProbeEvent
from tests.eventgen import make_event, produce
from tests.integration.test_worker import _create_topics
from tests.workers import Topics, restart, start_worker

PARTITIONS = 2


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _fresh(n: int) -> list[ProbeEvent]:
    now = time.time()
    return [make_event(started_at=now - 0.02, elapsed_ms=10.0) for _ in range(n)]


def test_ws_url() -> None:
    assert ws_url("http://127.0.0.1:8080/") == "ws://127.0.0.1:8080/v1/ws/events"
    assert ws_url("https://h:1") == "wss://h:1/v1/ws/events"


@pytest.mark.integration
@pytest.mark.timeout(90)
async def test_normal_and_slow_clients_against_a_real_worker(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(partitions=PARTITIONS)
    await _create_topics(kafka_bootstrap, topics)
    worker = start_worker(
        kafka_bootstrap, topics, app_id=f"{topics.prefix}-ws", data_dir=tmp_path / "worker"
    )
    raw = tmp_path / "raw"
    clients = WsClients(raw, [f"http://127.0.0.1:{worker.port}"], max_events_per_s=50)
    try:
        await asyncio.to_thread(worker.wait_ready)
        clients.start_normal()
        normal = clients.normal[0]
        await _until(lambda: normal.received >= 1, 20, "hello")
        # The feed starts at the latest offsets once assigned: send until events come through.
        deadline = time.monotonic() + 20
        while normal.events == 0 and time.monotonic() < deadline:
            await produce(kafka_bootstrap, topics.probe, _fresh(5), partitions=PARTITIONS)
            await asyncio.sleep(0.5)
        assert normal.events > 0

        clients.start_slow(1, read_delay_s=0.5)
        slow = clients.slow[0]
        await _until(lambda: slow.received >= 1, 10, "the slow client's hello")
        for _ in range(6):  # ~1,200 events/s for 3 s: the slow reader takes ~200/s
            await produce(kafka_bootstrap, topics.probe, _fresh(600), partitions=PARTITIONS)
            await asyncio.sleep(0.5)
        await _until(lambda: slow.dropped_notified > 0, 20, "a dropped notice")
        slow_summaries = await clients.stop_slow()

        worker.stop(signal.SIGKILL)
        worker = restart(worker)
        await asyncio.to_thread(worker.wait_ready)
        await _until(lambda: normal.reconnects >= 1 and normal.connected, 30, "a reconnect")
    finally:
        summaries = await clients.stop()
        worker.stop()

    assert [s.slow for s in slow_summaries] == [True] and slow_summaries[0].dropped_notified > 0
    assert summaries[0].client == normal.name and summaries[0].reconnects >= 1
    written = list(read_jsonl(raw / "ws_clients.jsonl", WsClientSummary))
    assert {s.client for s in written} == {normal.name, slow.name}

    messages = list(read_jsonl(raw / "ws.jsonl", WsMessage))
    events = [m for m in messages if m.type == "event" and m.client == normal.name]
    assert events and all(m.ended_at is not None for m in events)
    delays = [m.received_at - m.ended_at for m in events if m.ended_at is not None]
    assert all(-0.5 < d < 15 for d in delays), (min(delays), max(delays))
    assert all(len(m.trace_id or "") == 32 and len(m.request_id or "") == 16 for m in events)
    # Sampling: at most 50 event rows a second per client, every event still counted.
    per_second: dict[tuple[str, int], int] = {}
    for m in messages:
        if m.type == "event":
            key = (m.client, int(m.received_at))
            per_second[key] = per_second.get(key, 0) + 1
    assert max(per_second.values()) <= 50
    assert normal.events > len(events) or normal.events_unsampled == 0
    notices = [m for m in messages if m.type == "dropped" and m.client == slow.name]
    assert sum(m.count or 0 for m in notices) == slow.dropped_notified
    assert any(m.type == "hello" for m in messages)
