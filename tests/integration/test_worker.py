"""The metrics engine through the real Kafka: events -> tables -> query, dead letters,
two workers equal one, restarts keep windows and their expiry, alerts on every partition."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer

from agents.deadletter import decode_dead_letter
from pipeline.app import topic_specs
from pipeline.envelope import encode_batch
from pipeline.schema import ProbeEvent, encode_event
from pipeline.settings import WorkerSettings
from pipeline.topics import ensure_topics
from tables.alerting import decode_alert
from tables.windows import bucket_start
from tests.eventgen import make_event, produce, route_for_partition
from tests.workers import Topics, Worker, restart, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PARTITIONS = 8


async def _create_topics(bootstrap: str, topics: Topics) -> None:
    settings = WorkerSettings(
        kafka_bootstrap=bootstrap,
        probe_topic=topics.probe,
        dead_letter_topic=topics.dead_letters,
        alerts_topic=topics.alerts,
        probe_partitions=topics.partitions,
    )
    # The changelog topic is the worker's to create (under its own app id).
    specs = [spec for spec in topic_specs(settings) if not spec.name.endswith("-changelog")]
    await ensure_topics(bootstrap, specs)


async def _wait_for(
    check: Callable[[], Any],
    *,
    until: Callable[[Any], bool] = bool,
    timeout: float = 60.0,
    what: str = "",
) -> Any:
    """Poll ``check`` until ``until(value)``; the error shows the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if until(last):
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: last={last!r}")


def _items(worker: Worker, window: str = "5m", **filters: str) -> list[dict[str, Any]]:
    body = worker.get("/v1/metrics/network", window=window, limit=1000, **filters)
    return list(body["items"])


def _diff(after: dict[str, Any], before: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(view, route, field) of every value that differs: a readable failure."""
    out = []
    for view, items in before.items():
        again = {i["route"]: i for i in after.get(view, [])}
        for item in items:
            other = again.get(item["route"], {})
            out += [(view, item["route"], k) for k, v in item.items() if other.get(k) != v]
    return out


def _total_requests(worker: Worker, window: str = "5m") -> int:
    return sum(item["requests"] for item in _items(worker, window))


async def _read_topic(
    bootstrap: str, topic: str, *, want: int, timeout: float = 60.0
) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while len(values) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                values.extend(r.value for r in records if r.value is not None)
    finally:
        await consumer.stop()
    return values


def _workload(base: float, seed: int = 7) -> list[ProbeEvent]:
    """5 routes x 400 events over 50 s (one 1m view), lognormal latencies, 2% 503s."""
    rng = random.Random(seed)
    events = []
    for r in range(5):
        for i in range(400):
            status = 503 if i % 50 == 0 else 200
            events.append(
                make_event(
                    route=f"/items/r{r}",
                    started_at=base + rng.uniform(0, 49.9),
                    elapsed_ms=rng.lognormvariate(3.0 + r * 0.3, 0.6),
                    status_code=status,
                    rng=rng,
                )
            )
    return events


async def test_events_to_tables_to_query_and_dead_letters(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(partitions=PARTITIONS)
    await _create_topics(kafka_bootstrap, topics)
    base = float(bucket_start(time.time()) - 300)
    events = _workload(base)
    good = encode_event(events[0])
    mixed = encode_batch("t@h:1", 0, base, [good, b'{"schema_version": 1, "service": 42}'])
    worker = start_worker(kafka_bootstrap, topics, app_id=f"{topics.prefix}-a", data_dir=tmp_path)
    try:
        await asyncio.to_thread(worker.wait_ready)
        await produce(
            kafka_bootstrap,
            topics.probe,
            events,
            partitions=PARTITIONS,
            extra_records=[(0, b'{"envelope_version": 1, "events": ['), (1, mixed)],
        )
        expected_total = len(events) + 1  # the valid neighbour in the mixed record counts
        await _wait_for(
            lambda: _total_requests(worker) == expected_total, what="all events in the view"
        )
        items = {item["route"]: item for item in _items(worker, "1m", service="checkout")}
        assert len(items) == 5
        for r in range(5):
            latencies = np.array(
                [e.elapsed_ms for e in events if e.route == f"/items/r{r}"]
                + ([events[0].elapsed_ms] if events[0].route == f"/items/r{r}" else [])
            )
            item = items[f"/items/r{r}"]
            assert item["requests"] == len(latencies)
            for q, name in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
                exact = float(np.quantile(latencies, q, method="lower"))
                assert abs(item[name] - exact) / exact <= 0.01, (r, name, item[name], exact)
            assert (
                item["errors"]
                == item["status_classes"].get("5xx", 0)
                == 8
                + (1 if events[0].route == f"/items/r{r}" and events[0].status_code == 503 else 0)
            )
        letters = await _read_topic(kafka_bootstrap, topics.dead_letters, want=2)
        decoded = sorted((decode_dead_letter(v)[0] for v in letters), key=lambda d: d.reason)
        assert [(d.reason, d.source_partition, d.index) for d in decoded] == [
            ("invalid_field:service", 1, 1),
            ("malformed_record", 0, -1),
        ]
        assert decode_dead_letter(letters[0])[1] in (
            b'{"envelope_version": 1, "events": [',
            b'{"schema_version": 1, "service": 42}',
        )
        metrics = await asyncio.to_thread(
            lambda: __import__("httpx").get(f"http://127.0.0.1:{worker.port}/metrics").text
        )
        assert 'egresswatch_dead_letters_total{reason="malformed_record"} 1.0' in metrics
    finally:
        worker.stop()


async def test_two_workers_answer_like_one(kafka_bootstrap: str, tmp_path: Path) -> None:
    topics = Topics(partitions=PARTITIONS)
    await _create_topics(kafka_bootstrap, topics)
    base = float(bucket_start(time.time()) - 300)
    events = _workload(base, seed=11)
    single = start_worker(
        kafka_bootstrap, topics, app_id=f"{topics.prefix}-one", data_dir=tmp_path / "one"
    )
    pair = [
        start_worker(
            kafka_bootstrap, topics, app_id=f"{topics.prefix}-two", data_dir=tmp_path / f"two{i}"
        )
        for i in range(2)
    ]
    workers = [single, *pair]
    try:
        await asyncio.gather(*(asyncio.to_thread(w.wait_ready) for w in workers))
        # Both workers of the pair must own partitions before the data flows.
        await _wait_for(
            lambda: all(w.pipeline()["owned_partitions"] > 0 for w in pair),
            what="both workers of the pair assigned",
        )
        await produce(kafka_bootstrap, topics.probe, events, partitions=PARTITIONS)

        def progress(worker: Worker) -> tuple[int, dict[str, int]]:
            return _total_requests(worker), worker.pipeline()

        for worker in workers:
            await _wait_for(
                functools.partial(progress, worker),
                until=lambda v: v[0] == len(events),
                what=f"worker {worker.port}",
            )
        owned = [w.pipeline()["owned_partitions"] for w in pair]
        assert sum(owned) == PARTITIONS and min(owned) > 0
        for window in ("10s", "1m", "5m"):
            answers = [_items(w, window) for w in workers]
            assert answers[0] == answers[1] == answers[2], window
    finally:
        for worker in workers:
            worker.stop()


async def test_restart_keeps_windows_and_their_expiry(kafka_bootstrap: str, tmp_path: Path) -> None:
    topics = Topics(partitions=PARTITIONS)
    await _create_topics(kafka_bootstrap, topics)
    base = float(bucket_start(time.time()) - 300)
    events = _workload(base, seed=5)
    worker = start_worker(kafka_bootstrap, topics, app_id=f"{topics.prefix}-r", data_dir=tmp_path)
    try:
        await asyncio.to_thread(worker.wait_ready)
        await produce(kafka_bootstrap, topics.probe, events, partitions=PARTITIONS)
        await _wait_for(lambda: _total_requests(worker) == len(events), what="first run")
        before = {w: _items(worker, w) for w in ("10s", "1m", "5m")}
        cells_before = worker.pipeline()["cells_local"]
        assert cells_before > 0
        assert worker.stop() == 0

        worker = restart(worker)
        ready = await asyncio.to_thread(worker.wait_ready)
        await _wait_for(
            lambda: worker.pipeline()["cells_local"] == cells_before,
            what="local table recovered from the changelog",
        )
        assert ready["status"] == "ready"
        after = {w: _items(worker, w) for w in ("10s", "1m", "5m")}
        assert _diff(after, before) == []

        # Stream time jumps 2,000 s ahead: every restored cell is past retention and must
        # go, from the local table (tombstoned) and from the view.
        later = [
            make_event(route="/later", started_at=base + 2_000 + i * 0.1, elapsed_ms=5.0)
            for i in range(20)
        ]
        await produce(kafka_bootstrap, topics.probe, later, partitions=PARTITIONS)
        await _wait_for(
            lambda: [i["route"] for i in _items(worker, "5m")] == ["/later"],
            what="old windows expired from the view",
        )
        stats = await _wait_for(
            lambda: (s := worker.pipeline())["cells_local"] <= 2 and s,
            what="old windows expired from the local table",
        )
        assert stats["tombstones_sent"] >= cells_before
    finally:
        worker.stop()


RULES = """
version = 1
[[rule]]
name = "p99-spike"
service = "*"
route = "*"
kind = "latency_p99"
threshold_ms = 500
windows = [{ long = "1m", short = "10s" }]
min_requests = 5
for_s = 0
resolve_after_s = 0
resolve_ratio = 0.8
severity = "page"
"""


def _phase(routes: list[str], start: float, end: float, latency_ms: float) -> list[ProbeEvent]:
    rng = random.Random(int(start))
    events = []
    for route in routes:
        t = start
        while t < end:
            events.append(make_event(route=route, started_at=t, elapsed_ms=latency_ms, rng=rng))
            t += 0.5
    return events


async def test_alert_fires_and_resolves_on_every_partition(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(partitions=PARTITIONS)
    await _create_topics(kafka_bootstrap, topics)
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    routes = [route_for_partition(p, PARTITIONS) for p in range(PARTITIONS)]
    base = float(bucket_start(time.time()) - 600)
    worker = start_worker(
        kafka_bootstrap,
        topics,
        app_id=f"{topics.prefix}-al",
        data_dir=tmp_path,
        extra_env={"EGRESSWATCH_SLO_RULES_PATH": str(rules)},
    )
    try:
        await asyncio.to_thread(worker.wait_ready)
        spike = _phase(routes, base, base + 60, 20.0) + _phase(
            routes, base + 60, base + 80, 2_000.0
        )
        await produce(kafka_bootstrap, topics.probe, spike, partitions=PARTITIONS)
        fired = await _alerts(kafka_bootstrap, topics.alerts, want={(r, "firing") for r in routes})
        await produce(
            kafka_bootstrap,
            topics.probe,
            _phase(routes, base + 80, base + 200, 20.0),
            partitions=PARTITIONS,
        )
        both = await _alerts(
            kafka_bootstrap,
            topics.alerts,
            want={(r, s) for r in routes for s in ("firing", "resolved")},
        )
        for route in routes:
            sequence = [a.status for a in both if a.route == route]
            assert sequence == ["firing", "resolved"], (route, sequence)
        for alert in fired:
            assert alert.example_trace_ids and len(alert.trace_id) == 32
            assert alert.observed.value >= 500
    finally:
        worker.stop()


async def _alerts(
    bootstrap: str, topic: str, *, want: set[tuple[str, str]], timeout: float = 90.0
) -> list[Any]:
    deadline = time.monotonic() + timeout
    seen: list[Any] = []
    while time.monotonic() < deadline:
        seen = [decode_alert(v) for v in await _read_topic(bootstrap, topic, want=10**9, timeout=2)]
        if want <= {(a.route, a.status) for a in seen}:
            return seen
    raise AssertionError(f"alerts missing: {want - {(a.route, a.status) for a in seen}}")


async def test_a_rebalance_keeps_every_window(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A second worker joins after data arrived: partitions move, cells move with them."""
    topics = Topics(partitions=PARTITIONS)
    await _create_topics(kafka_bootstrap, topics)
    base = float(bucket_start(time.time()) - 300)
    routes = [route_for_partition(p, PARTITIONS) for p in range(PARTITIONS)]
    rng = random.Random(17)

    def batch(start: float) -> list[ProbeEvent]:
        return [
            make_event(route=r, started_at=start + i * 0.05, elapsed_ms=rng.uniform(5, 50), rng=rng)
            for r in routes
            for i in range(100)
        ]

    first, second = batch(base), batch(base + 5)
    app_id = f"{topics.prefix}-rb"
    one = start_worker(kafka_bootstrap, topics, app_id=app_id, data_dir=tmp_path / "a")
    workers = [one]
    try:
        await asyncio.to_thread(one.wait_ready)
        await produce(kafka_bootstrap, topics.probe, first, partitions=PARTITIONS)
        await _wait_for(lambda: _total_requests(one) == len(first), what="first half")
        two = start_worker(kafka_bootstrap, topics, app_id=app_id, data_dir=tmp_path / "b")
        workers.append(two)

        def owned() -> list[int]:
            try:
                return [w.pipeline()["owned_partitions"] for w in workers]
            except httpx.HTTPError:
                return []

        await _wait_for(
            owned,
            until=lambda o: bool(o) and min(o) > 0 and sum(o) == PARTITIONS,
            timeout=90,
            what="partitions spread over both workers",
        )
        await asyncio.gather(*(asyncio.to_thread(w.wait_ready) for w in workers))
        await produce(kafka_bootstrap, topics.probe, second, partitions=PARTITIONS)
        expected = {r: 200 for r in routes}

        def counts(worker: Worker) -> dict[str, int]:
            return {i["route"]: i["requests"] for i in _items(worker)}

        for worker in workers:
            await _wait_for(
                functools.partial(counts, worker),
                until=lambda got: got == expected,
                timeout=90,
                what=f"every route counted exactly twice over on worker {worker.port}",
            )
    finally:
        for worker in workers:
            worker.stop()
