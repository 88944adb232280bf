"""The per-second collector against a real worker and a real Prometheus scraping it, and
the alerts tail against the real Kafka."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from pipeline.campaign.collect import AlertsTail, Collector
from pipeline.campaign.raw import AlertSeen, LoadTick, Sample, read_jsonl
from tables.alerting import AlertRecord, Observed, encode_alert
from tests.eventgen import make_event, produce
from tests.integration.test_worker import _create_topics
from tests.ports import free_port
from tests.prom import run_prometheus
from tests.workers import Topics, start_worker

PARTITIONS = 2


def _alert(i: int) -> AlertRecord:
    return AlertRecord(
        alert_id=f"{i:032x}",
        status="firing",
        rule="error-rate-fast-burn",
        kind="error_rate",
        severity="page",
        service="checkout",
        route="/pay",
        method="POST",
        observed=Observed(value=0.2, by_view={"5m": 0.2}),
        threshold=0.144,
        objective=0.99,
        burn_rate=20.0,
        views=("5m", "1m"),
        started_at=1.0,
        fired_at=1.0,
        resolved_at=None,
        evaluated_at=1.0,
        example_trace_ids=(),
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        request_id=f"{i + 1:016x}",
        message="test",
    )


@pytest.mark.integration
@pytest.mark.timeout(90)
async def test_collector_samples_a_worker_prometheus_and_processes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(partitions=PARTITIONS)
    await _create_topics(kafka_bootstrap, topics)
    worker = start_worker(
        kafka_bootstrap, topics, app_id=f"{topics.prefix}-c", data_dir=tmp_path / "worker"
    )
    raw = tmp_path / "raw"
    try:
        await asyncio.to_thread(worker.wait_ready)
        base = time.time() - 5
        events = [make_event(started_at=base + i * 0.01, elapsed_ms=10.0) for i in range(200)]
        await produce(kafka_bootstrap, topics.probe, events, partitions=PARTITIONS)
        target = f"127.0.0.1:{worker.port}"
        with run_prometheus([target], job="workers", workdir=tmp_path / "prom") as prom:
            await asyncio.to_thread(prom.wait_up, "workers")
            tick = LoadTick(
                t=time.time(), phase="load", target_rate=1, started=1, completed=1, dropped=0,
                in_flight=0, emitter={"queue_depth": 3, "dropped_queue_full": 2},
            )  # fmt: skip
            collector = Collector(
                raw,
                workers={"w1": f"http://{target}", "gone": f"http://127.0.0.1:{free_port()}"},
                prometheus_url=prom.url,
                pids={"w1": worker.proc.pid, "me": os.getpid()},
                latest_tick=lambda: tick,
                extra_queues=lambda: {"ws/a": {"drops": 4.0}},
                emitter_queue_cap=100,
                windows_every_s=2.0,
                metrics_every_s=2.0,
            )
            await collector.start()
            await asyncio.sleep(4.5)
            await collector.stop()
    finally:
        worker.stop()

    samples = list(read_jsonl(raw / "samples.jsonl", Sample))
    assert 4 <= len(samples) <= 6, [s.t for s in samples]
    assert all(b.t - a.t == pytest.approx(1.0, abs=0.3) for a, b in itertools.pairwise(samples))
    last = samples[-1]
    w1 = last.workers["w1"]
    assert w1["ready"] is True and w1["owned_partitions"] == PARTITIONS
    assert w1["records"] >= 1 and 0 < w1["api_latency_ms"] < 1000
    assert last.workers["gone"] == {"ready": False, "ready_error": True}
    assert sum("metrics_latency_ms" in s.workers["w1"] for s in samples) in (2, 3)
    windowed = [s for s in samples if s.windows]
    assert 2 <= len(windowed) <= 3
    assert windowed[0].windows[0]["worker"] == "w1" and windowed[0].windows[0]["view"] == "1m"
    assert last.prometheus["up:w1"] == 1.0 and "up:gone" in last.prometheus
    assert last.prometheus["dead_letters"] is None or last.prometheus["dead_letters"] >= 0
    assert any((s.prometheus.get("ingest_events_per_s") or 0) > 0 for s in samples) or any(
        s.prometheus.get("metric_series_max") for s in samples
    )
    assert last.processes["w1"]["rss_bytes"] > 10 * 2**20 and last.processes["me"]["cpu_s"] > 0
    assert last.queues["emitter"] == {"depth": 3, "drops": 2, "at": tick.t, "cap": 100}
    assert last.queues["ws/a"] == {"drops": 4.0}
    assert "depth" in last.queues["sink_open/w1"] and "cap" in last.queues["spool/w1"]


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_alerts_tail_reads_the_topic_from_the_beginning(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(partitions=PARTITIONS)
    await _create_topics(kafka_bootstrap, topics)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    tail = AlertsTail(kafka_bootstrap, topics.alerts, tmp_path, poll_ms=100)
    try:
        await producer.send_and_wait(topics.alerts, encode_alert(_alert(0)), partition=0)
        await tail.start()
        await producer.send_and_wait(topics.alerts, encode_alert(_alert(1)), partition=0)
        await producer.send_and_wait(topics.alerts, b"not an alert", partition=0)
        deadline = time.monotonic() + 20
        while tail.seen < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        await tail.stop()
        await producer.stop()
    seen = list(read_jsonl(tmp_path / "alerts.jsonl", AlertSeen))
    assert len(seen) == 3 and tail.invalid == 1
    valid = sorted(s.record["request_id"] for s in seen if "invalid" not in s.record)
    assert valid == [f"{1:016x}", f"{2:016x}"]
    bad = next(s.record for s in seen if "invalid" in s.record)
    assert bad["raw"] == "not an alert"
