"""Invariant I4 end to end: a real worker, real Kafka, real RGW.

Critical events reach RGW under the documented keys, exactly once, through an RGW outage
under steady load and through a worker killed with SIGKILL mid-batch.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.schema import ProbeEvent, decode_event
from sinks.keys import parse_key
from sinks.replay import ReplaySource
from tables.windows import bucket_start
from tests.eventgen import make_event, produce
from tests.integration.test_worker import PARTITIONS, _create_topics, _wait_for
from tests.rgw import RgwControl, S3Endpoint
from tests.workers import Topics, Worker, restart, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


def _sink_env(endpoint: S3Endpoint, bucket: str) -> dict[str, str]:
    return {
        "EGRESSWATCH_S3_ENDPOINT": endpoint.url,
        "EGRESSWATCH_S3_ACCESS_KEY": endpoint.access_key,
        "EGRESSWATCH_S3_SECRET_KEY": endpoint.secret_key,
        "EGRESSWATCH_S3_BUCKET": bucket,
        "EGRESSWATCH_SINK_IDLE_S": "1.0",
        "EGRESSWATCH_SINK_MAX_AGE_S": "5.0",
        "EGRESSWATCH_SPOOL_MAX_BYTES": str(64 * 2**20),
    }


def _events(n: int, base: float, rng: random.Random) -> list[ProbeEvent]:
    """A mix in which about a quarter is critical (503s and 6 s calls)."""
    out = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.15:
            status, elapsed = 503, 20.0
        elif kind < 0.25:
            status, elapsed = 200, 6_000.0
        else:
            status, elapsed = 200, rng.uniform(5, 50)
        out.append(
            make_event(
                service=rng.choice(["checkout", "billing"]),
                route=f"/r{i % 7}",
                started_at=base + i * 0.01,
                elapsed_ms=elapsed,
                status_code=status,
                rng=rng,
            )
        )
    return out


def _stored(endpoint: S3Endpoint, bucket: str) -> tuple[Counter[str], list[str]]:
    """request_id -> how many times it is in RGW, and the object keys."""
    # Read as replay reads it: list_objects keeps objects only (see its docstring).
    source = ReplaySource.s3(endpoint.url, endpoint.access_key, endpoint.secret_key, bucket)
    keys = list(source.list_objects("egresswatch/events/"))
    seen: Counter[str] = Counter()
    for key in keys:
        for line in source.read(key).splitlines():
            if line.strip():
                seen[decode_event(line).request_id] += 1
    return seen, keys


def _critical_ids(events: list[ProbeEvent]) -> set[str]:
    return {e.request_id for e in events if e.severity == "critical"}


async def _steady(bootstrap: str, topic: str, events: list[ProbeEvent], seconds: float) -> None:
    """Send ``events`` spread evenly over ``seconds`` in small batches."""
    chunks = max(1, int(seconds * 4))
    size = -(-len(events) // chunks)
    for start in range(0, len(events), size):
        await produce(bootstrap, topic, events[start : start + size], partitions=PARTITIONS)
        await asyncio.sleep(0.25)


async def _until_exactly_once(
    endpoint: S3Endpoint, bucket: str, expected: set[str], timeout: float = 120.0
) -> tuple[Counter[str], list[str]]:
    def check() -> Any:
        return _stored(endpoint, bucket)

    seen, keys = await _wait_for(
        check, until=lambda v: set(v[0]) >= expected, timeout=timeout, what="critical events in RGW"
    )
    return seen, keys


async def test_critical_events_land_under_documented_keys(
    kafka_bootstrap: str, s3_endpoint: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    topics = Topics(partitions=PARTITIONS)
    await _create_topics(kafka_bootstrap, topics)
    base = float(bucket_start(time.time()) - 120)
    events = _events(800, base, random.Random(3))
    worker = start_worker(
        kafka_bootstrap,
        topics,
        app_id=f"{topics.prefix}-s",
        data_dir=tmp_path,
        extra_env=_sink_env(s3_endpoint, s3_bucket),
    )
    try:
        await asyncio.to_thread(worker.wait_ready)
        await produce(kafka_bootstrap, topics.probe, events, partitions=PARTITIONS)
        expected = _critical_ids(events)
        seen, keys = await _until_exactly_once(s3_endpoint, s3_bucket, expected)
        assert set(seen) == expected, "only critical events are stored by default"
        assert all(count == 1 for count in seen.values())
        for key in keys:
            parsed = parse_key(key)
            assert parsed.topic == topics.probe
            assert key.startswith(f"egresswatch/events/service={parsed.service}/date=")
            assert key.endswith(f"/{topics.probe}+{parsed.partition}+{parsed.first_offset}.jsonl")
    finally:
        worker.stop()


async def test_rgw_outage_under_load_loses_nothing(
    kafka_bootstrap: str, rgw_control: RgwControl, s3_bucket: str, tmp_path: Path
) -> None:
    topics = Topics(partitions=PARTITIONS)
    await _create_topics(kafka_bootstrap, topics)
    endpoint = rgw_control.endpoint
    rng = random.Random(9)
    base = float(bucket_start(time.time()) - 200)
    worker = start_worker(
        kafka_bootstrap,
        topics,
        app_id=f"{topics.prefix}-o",
        data_dir=tmp_path,
        extra_env=_sink_env(endpoint, s3_bucket),
    )
    try:
        await asyncio.to_thread(worker.wait_ready)
        before = _events(600, base, rng)
        await _steady(kafka_bootstrap, topics.probe, before, 3)
        await asyncio.to_thread(rgw_control.stop)
        during = _events(3_000, base + 10, rng)  # ~30 s of steady load with RGW down
        await _steady(kafka_bootstrap, topics.probe, during, 30)
        spooled = (await asyncio.to_thread(worker.get, "/v1/resilience/state"))["pipeline"]["sink"]
        assert spooled["breaker_state"] in ("open", "half_open")
        assert spooled["spool_bytes"] > 0
        await asyncio.to_thread(rgw_control.start)
        after = _events(300, base + 50, rng)
        await _steady(kafka_bootstrap, topics.probe, after, 2)
        expected = _critical_ids(before + during + after)
        seen, _ = await _until_exactly_once(endpoint, s3_bucket, expected)
        assert set(seen) == expected
        duplicates = {rid: n for rid, n in seen.items() if n > 1}
        assert not duplicates, f"{len(duplicates)} critical events stored more than once"
    finally:
        worker.stop()


async def test_worker_killed_mid_batch_then_restarted_stores_exactly_once(
    kafka_bootstrap: str, s3_endpoint: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    topics = Topics(partitions=PARTITIONS)
    await _create_topics(kafka_bootstrap, topics)
    rng = random.Random(21)
    base = float(bucket_start(time.time()) - 200)
    env = _sink_env(s3_endpoint, s3_bucket)
    worker: Worker = start_worker(
        kafka_bootstrap, topics, app_id=f"{topics.prefix}-k", data_dir=tmp_path, extra_env=env
    )
    try:
        await asyncio.to_thread(worker.wait_ready)
        first = _events(1_500, base, rng)
        await _steady(kafka_bootstrap, topics.probe, first, 4)
        assert worker.stop(signal.SIGKILL) == -signal.SIGKILL  # mid-batch: batches still open
        second = _events(1_000, base + 20, rng)
        await produce(kafka_bootstrap, topics.probe, second, partitions=PARTITIONS)
        worker = restart(worker)
        await asyncio.to_thread(worker.wait_ready)
        expected = _critical_ids(first + second)
        seen, _ = await _until_exactly_once(s3_endpoint, s3_bucket, expected)
        assert set(seen) == expected
        duplicates = {rid: n for rid, n in seen.items() if n > 1}
        assert not duplicates, f"{len(duplicates)} critical events stored more than once"
    finally:
        worker.stop()
