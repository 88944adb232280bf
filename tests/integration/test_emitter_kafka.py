"""The emitter against a real Kafka broker (scripts/kafka-local, through tests/conftest.py).

Also checks ``partition_for_key`` against where two real producers put a keyed record: aiokafka's
default partitioner and the Java client's (``kafka.tools.ConsoleProducer`` from the broker's
own jars), which is the reference every other client copies.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.envelope import decode_batch
from pipeline.partitioning import key_bytes, partition_for_key
from pipeline.probe.emitter import EmitterStats, KafkaEmitter
from pipeline.schema import ProbeEvent, table_key
from pipeline.topics import TopicSpec, ensure_topics
from tests.eventgen import EMITTER_BASE_EVENT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]

BASE = EMITTER_BASE_EVENT

# Keys with every remainder of length mod 4 (murmur2's tail), a `|` in the route, non-ASCII.
KEYS = [
    f"svc-{n}|{m}|/api/v{n % 3}/items{'/x' * (n % 4)}" for n in range(40) for m in ("GET", "POST")
]
KEYS += ["checkout|GET|/a|b", "checkout|GET|/caf\u00e9/{id}", "s|DELETE|/\u6771\u4eac"]


def make_event(i: int, *, routes: int = 40) -> ProbeEvent:
    return msgspec.structs.replace(
        BASE,
        service=f"svc-{i % 3}",
        route=f"/api/r{i % routes}/{{id}}",
        request_id=f"{i + 1:016x}",
        started_at=BASE.started_at + i,
    )


async def consume(
    bootstrap: str, topic: str, *, until_events: int, timeout_s: float = 30.0
) -> list[Any]:
    """The records of ``topic`` from the start, once ``until_events`` events are in (or timeout)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[Any] = []
    events = 0
    deadline = time.monotonic() + timeout_s
    try:
        while events < until_events and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                for message in messages:
                    records.append(message)
                    events += len(decode_batch(message.value).valid)
        # Anything more (duplicates) would show up now.
        for messages in (await consumer.getmany(timeout_ms=300)).values():
            records.extend(messages)
    finally:
        await consumer.stop()
    return records


def settled(stats: EmitterStats) -> int:
    return (
        stats.sent_events
        + stats.dropped_queue_full
        + stats.dropped_on_close
        + stats.dropped_rejected
        + stats.dropped_invalid
    )


def free_port_pair() -> int:
    """A port P with P and P+1 free (broker and KRaft controller)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


async def test_events_arrive_packed_decodable_and_on_their_key_partition(
    kafka_bootstrap: str, kafka_topic: Callable[..., Any]
) -> None:
    topic = await kafka_topic(partitions=4)
    sent = [make_event(i) for i in range(3_000)]
    async with KafkaEmitter(kafka_bootstrap, service="checkout", topic=topic) as emitter:
        for event in sent:
            emitter.submit(event)
    stats = emitter.stats()
    assert stats.sent_events == 3_000 and stats.dropped_total == 0 and stats.num_partitions == 4

    records = await consume(kafka_bootstrap, topic, until_events=3_000)
    assert len(records) == stats.sent_batches
    assert len(records) <= 3_000 // 50  # many events per record
    got: list[ProbeEvent] = []
    for record in records:
        batch = decode_batch(record.value)
        assert not batch.invalid and batch.producer == emitter.producer_id
        assert record.key == key_bytes(table_key(batch.valid[0]))
        for event in batch.valid:
            assert partition_for_key(table_key(event), 4) == record.partition
        got.extend(batch.valid)
    assert sorted(got, key=lambda e: e.request_id) == sent  # same fields, nothing twice


async def test_partition_for_key_is_where_aiokafka_puts_a_keyed_record(
    kafka_bootstrap: str, kafka_topic: Callable[..., Any]
) -> None:
    topic = await kafka_topic(partitions=7)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for key in KEYS:  # no partition given: the default partitioner decides
            metadata = await producer.send_and_wait(topic, value=b"x", key=key_bytes(key))
            assert metadata.partition == partition_for_key(key, 7), key
    finally:
        await producer.stop()


async def test_partition_for_key_is_where_the_java_client_puts_a_keyed_record(
    kafka_bootstrap: str, kafka_topic: Callable[..., Any]
) -> None:
    libs = sorted(REPO.glob(".cache/kafka/*/libs/.complete"))
    assert libs, "the broker's jars are missing: run scripts/kafka-local fetch"
    topic = await kafka_topic(partitions=12)
    # key_bytes never contains a raw tab or newline (JSON escapes them): safe as a line format.
    lines = b"".join(key_bytes(k) + b"\t" + str(i).encode() + b"\n" for i, k in enumerate(KEYS))
    java = await asyncio.to_thread(
        subprocess.run,
        [
            "java",
            "-Xmx256m",
            "-cp",
            f"{libs[-1].parent}/*",
            "kafka.tools.ConsoleProducer",
            "--bootstrap-server",
            kafka_bootstrap,
            "--topic",
            topic,
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=\t",
        ],
        input=lines,
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert java.returncode == 0, java.stderr.decode()[-2000:]

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    placed: dict[int, tuple[bytes, int]] = {}
    try:
        deadline = time.monotonic() + 30
        while len(placed) < len(KEYS) and time.monotonic() < deadline:
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                for message in messages:
                    placed[int(message.value)] = (message.key, tp.partition)
    finally:
        await consumer.stop()
    assert len(placed) == len(KEYS)
    for index, key in enumerate(KEYS):
        record_key, partition = placed[index]
        assert record_key == key_bytes(key)
        assert partition == partition_for_key(key, 12), key


async def test_close_flushes_everything_that_was_queued(
    kafka_bootstrap: str, kafka_topic: Callable[..., Any]
) -> None:
    topic = await kafka_topic(partitions=3)
    # A long interval and a batch size no key group reaches alone: only close() sends.
    emitter = KafkaEmitter(
        kafka_bootstrap,
        service="checkout",
        topic=topic,
        flush_interval_s=60,
        batch_max_events=10_000,
    ).start()
    for i in range(5_000):
        emitter.submit(make_event(i))
    assert emitter.stats().sent_events == 0
    stats = await emitter.aclose(timeout_s=20)
    assert stats.sent_events == 5_000 and stats.dropped_total == 0 and stats.queue_depth == 0
    records = await consume(kafka_bootstrap, topic, until_events=5_000)
    assert sum(len(decode_batch(r.value).valid) for r in records) == 5_000


async def test_a_burst_beyond_the_bound_while_kafka_is_slow_drops_oldest_and_counts(
    kafka_bootstrap: str, kafka_topic: Callable[..., Any]
) -> None:
    topic = await kafka_topic(partitions=2)
    # linger_ms makes every produce request wait 300 ms: a slow broker, seen from the emitter.
    emitter = KafkaEmitter(
        kafka_bootstrap, service="checkout", topic=topic, queue_max=1_000, linger_ms=300
    ).start()
    deadline = time.monotonic() + 20
    while not emitter.stats().connected:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    depth_max = 0
    started = time.perf_counter()
    for i in range(50_000):
        emitter.submit(make_event(i))
        if i % 1_000 == 0:
            depth_max = max(depth_max, emitter.stats().queue_depth)
    burst_s = time.perf_counter() - started
    assert burst_s < 5.0  # the burst never waited for Kafka
    assert depth_max <= 1_000
    stats = await emitter.aclose(timeout_s=20)
    assert stats.submitted == stats.enqueued == 50_000
    assert stats.dropped_queue_full > 40_000  # most of the burst could not be kept
    assert stats.dropped_on_close == 0 and settled(stats) == 50_000
    records = await consume(kafka_bootstrap, topic, until_events=stats.sent_events)
    delivered = [e for r in records for e in decode_batch(r.value).valid]
    assert len(delivered) == stats.sent_events
    # Drop-oldest: the last events of the burst are the ones that made it.
    assert make_event(49_999).request_id in {e.request_id for e in delivered}


async def test_kafka_not_listening_never_delays_the_caller() -> None:
    port = free_port_pair()  # nothing listens there
    emitter = KafkaEmitter(f"127.0.0.1:{port}", service="checkout", topic="t", queue_max=2_000)
    started = time.perf_counter()
    for i in range(10_000):
        emitter.submit(make_event(i))
    assert time.perf_counter() - started < 1.0
    await asyncio.sleep(0.3)  # the thread is retrying meanwhile
    stats = emitter.stats()
    assert not stats.connected and stats.dropped_queue_full == 8_000 and stats.queue_depth == 2_000
    started = time.perf_counter()
    stats = await emitter.aclose(timeout_s=0.5)
    assert time.perf_counter() - started < 2.0
    assert stats.dropped_on_close == 2_000 and settled(stats) == 10_000


@pytest.fixture
async def late_broker(tmp_path: Path) -> AsyncIterator[tuple[int, Callable[[], Any]]]:
    """A port where no broker listens yet, and a coroutine that starts a private one there."""
    port = free_port_pair()
    env = {
        **os.environ,
        "EGRESSWATCH_KAFKA_DIR": str(tmp_path / "kafka"),
        "EGRESSWATCH_KAFKA_PORT": str(port),
        "EGRESSWATCH_KAFKA_CONTROLLER_PORT": str(port + 1),
    }
    script = str(REPO / "scripts" / "kafka-local")

    async def up() -> None:
        result = await asyncio.to_thread(
            subprocess.run, [script, "up"], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr[-2000:]

    try:
        yield port, up
    finally:
        await asyncio.to_thread(
            subprocess.run, [script, "down", "--purge"], env=env, capture_output=True, timeout=60
        )


async def test_events_queued_while_kafka_is_down_are_sent_once_it_is_up(
    late_broker: tuple[int, Callable[[], Any]],
) -> None:
    port, start_broker = late_broker
    bootstrap = f"127.0.0.1:{port}"
    emitter = KafkaEmitter(
        bootstrap, service="checkout", topic="late", backoff_max_s=0.5, connect_timeout_s=2
    )
    for i in range(2_000):
        emitter.submit(make_event(i))
    await start_broker()
    await ensure_topics(bootstrap, [TopicSpec("late", partitions=2, retention_ms=-1)])
    deadline = time.monotonic() + 30
    while emitter.stats().sent_events < 2_000:
        assert time.monotonic() < deadline, emitter.stats()
        await asyncio.sleep(0.1)
    stats = await emitter.aclose()
    assert stats.sent_events == 2_000 and stats.dropped_total == 0
    records = await consume(bootstrap, "late", until_events=2_000)
    assert sum(len(decode_batch(r.value).valid) for r in records) == 2_000
