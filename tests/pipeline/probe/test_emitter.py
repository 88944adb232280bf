"""pipeline/probe/emitter.py without a broker: a fake producer, or a port where nothing listens.

The real broker is in tests/integration/test_emitter_kafka.py.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import psutil
import pytest
from aiokafka.codec import has_zstd
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from pipeline.envelope import decode_batch
from pipeline.partitioning import key_bytes, partition_for_key
from pipeline.probe._record import materialize
from pipeline.probe.emitter import EmitterStats, KafkaEmitter, _BoundedQueue, resolve_compression
from pipeline.probe.sink import EventSink
from pipeline.schema import ProbeEvent, table_key
from tests.eventgen import EMITTER_BASE_EVENT, emitter_event, emitter_record

NOWHERE = "127.0.0.1:1"  # nothing listens there: connection refused at once

BASE = EMITTER_BASE_EVENT


def settled(stats: EmitterStats) -> int:
    """Every submitted event ends in exactly one of these once the emitter is closed."""
    return (
        stats.sent_events
        + stats.dropped_queue_full
        + stats.dropped_on_close
        + stats.dropped_rejected
        + stats.dropped_invalid
    )


class FakeKafka:
    """A broker-less stand-in for AIOKafkaProducer; the emitter builds one per connection."""

    def __init__(self, partitions: int = 4) -> None:
        self.partitions = partitions
        self.lock = threading.Lock()
        self.records: list[tuple[int, bytes, bytes]] = []
        self.producer_kwargs: list[dict[str, Any]] = []
        self.starts = 0
        self.start_failures = 0  # the next N start() calls fail
        self.send_failures: list[BaseException] = []  # the next sends' futures fail with these
        self.hold_acks = False  # futures never resolve
        self.hold_sends = False  # send() itself never returns (a stalled broker, a full buffer)

    def factory(self, **kwargs: Any) -> FakeProducer:
        self.producer_kwargs.append(kwargs)
        return FakeProducer(self)

    def events_by_partition(self) -> dict[int, list[ProbeEvent]]:
        out: dict[int, list[ProbeEvent]] = {}
        with self.lock:
            for partition, _, value in self.records:
                out.setdefault(partition, []).extend(decode_batch(value).valid)
        return out

    def all_events(self) -> list[ProbeEvent]:
        return [e for events in self.events_by_partition().values() for e in events]


class FakeProducer:
    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka

    async def start(self) -> None:
        with self.kafka.lock:
            self.kafka.starts += 1
            if self.kafka.start_failures > 0:
                self.kafka.start_failures -= 1
                raise ConnectionRefusedError("fake broker down")

    async def stop(self) -> None:
        return None

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.kafka.partitions))

    async def send(self, topic: str, *, value: bytes, key: bytes, partition: int) -> Any:
        if self.kafka.hold_sends:
            await asyncio.sleep(3600)
        future = asyncio.get_running_loop().create_future()
        with self.kafka.lock:
            if self.kafka.send_failures:
                future.set_exception(self.kafka.send_failures.pop(0))
            elif not self.kafka.hold_acks:
                self.kafka.records.append((partition, key, value))
                future.set_result(None)
        return future


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


@pytest.fixture
def make_emitter(kafka: FakeKafka) -> Iterator[Callable[..., KafkaEmitter]]:
    made: list[KafkaEmitter] = []

    def make(bootstrap: str = "fake:9092", **kwargs: Any) -> KafkaEmitter:
        kwargs.setdefault("producer_factory", kafka.factory)
        kwargs.setdefault("backoff_initial_s", 0.01)
        kwargs.setdefault("backoff_max_s", 0.05)
        emitter = KafkaEmitter(bootstrap, service="checkout", topic="probe", **kwargs)
        made.append(emitter)
        return emitter

    yield make
    for emitter in made:
        emitter.close(timeout_s=0.5)


def record(request: pytest.FixtureRequest, name: str, value: object) -> None:
    """Keep a measurement with the test's report (timing asserts belong to bench/)."""
    request.node.user_properties.append((name, value))
    print(f"{request.node.name}: {name}={value}")


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


# -- the contract -------------------------------------------------------------------------


def test_is_an_event_sink(make_emitter: Callable[..., KafkaEmitter]) -> None:
    sink: EventSink = make_emitter()
    sink.submit(BASE)


def test_producer_is_idempotent_acks_all_with_bounded_buffers(
    make_emitter: Callable[..., KafkaEmitter], kafka: FakeKafka
) -> None:
    make_emitter(max_record_bytes=100_000, send_timeout_s=3.0).start()
    wait_until(lambda: bool(kafka.producer_kwargs))
    kwargs = kafka.producer_kwargs[0]
    assert kwargs["acks"] == "all" and kwargs["enable_idempotence"] is True
    assert kwargs["compression_type"] == resolve_compression("auto")
    assert kwargs["max_batch_size"] == 150_000  # whole records only, never unbounded
    assert kwargs["max_request_size"] >= 2 * 100_000
    assert kwargs["request_timeout_ms"] == 3000  # aiokafka expires what we stopped waiting for


def test_compression_choice() -> None:
    assert resolve_compression("auto") == ("zstd" if has_zstd() else "gzip")
    assert resolve_compression("gzip") == "gzip"
    assert resolve_compression("none") is None and resolve_compression(None) is None
    with pytest.raises(ValueError, match="unknown"):
        resolve_compression("brotli")
    if not has_zstd():
        with pytest.raises(ValueError, match="cramjam"):
            resolve_compression("zstd")


def test_producer_id_names_service_host_and_pid(make_emitter: Callable[..., KafkaEmitter]) -> None:
    import os

    emitter = make_emitter(hostname="web-1")
    assert emitter.producer_id == f"checkout@web-1:{os.getpid()}"


# -- batching and partitioning --------------------------------------------------------------


def test_events_are_packed_per_partition_the_way_the_router_hashes_keys(
    make_emitter: Callable[..., KafkaEmitter], kafka: FakeKafka
) -> None:
    emitter = make_emitter(batch_max_events=100)
    for i in range(2_000):
        emitter.submit(emitter_event(i))
    stats = emitter.close(timeout_s=5)

    assert stats.sent_events == 2_000 and stats.dropped_total == 0
    assert stats.sent_batches == len(kafka.records) < 2_000 // 10
    seqs: dict[int, list[int]] = {}
    for partition, key, value in kafka.records:
        batch = decode_batch(value)
        assert not batch.invalid and 1 <= len(batch.valid) <= 100
        assert batch.producer == emitter.producer_id
        assert key == key_bytes(table_key(batch.valid[0]))
        assert {partition_for_key(table_key(e), 4) for e in batch.valid} == {partition}
        seqs.setdefault(partition, []).append(batch.seq)
    assert len(seqs) == 4
    for partition_seqs in seqs.values():  # one gap-free sequence per partition
        assert partition_seqs == list(range(len(partition_seqs)))
    got = sorted(kafka.all_events(), key=lambda e: e.request_id)
    assert got == sorted((emitter_event(i) for i in range(2_000)), key=lambda e: e.request_id)


def test_a_record_never_exceeds_max_record_bytes(
    make_emitter: Callable[..., KafkaEmitter], kafka: FakeKafka
) -> None:
    emitter = make_emitter(max_record_bytes=4_096)
    for i in range(500):
        emitter.submit(emitter_event(i, routes=1))
    assert emitter.close(timeout_s=5).sent_events == 500
    assert all(len(value) <= 4_096 for _, _, value in kafka.records)
    assert len(kafka.records) > 500 * 400 // 4_096


def test_flushes_on_the_interval(make_emitter: Callable[..., KafkaEmitter]) -> None:
    emitter = make_emitter(flush_interval_s=0.05)
    emitter.submit(BASE)
    wait_until(lambda: emitter.stats().sent_events == 1, timeout_s=2)


def test_a_full_cycle_is_sent_before_the_interval(
    make_emitter: Callable[..., KafkaEmitter],
) -> None:
    emitter = make_emitter(flush_interval_s=30, batch_max_events=10, drain_max_events=50).start()
    wait_until(lambda: emitter.stats().connected)
    for i in range(50):
        emitter.submit(emitter_event(i))
    wait_until(lambda: emitter.stats().sent_events == 50, timeout_s=3)


def test_partition_count_is_refreshed_from_metadata(
    make_emitter: Callable[..., KafkaEmitter], kafka: FakeKafka
) -> None:
    emitter = make_emitter(metadata_refresh_s=0.05, flush_interval_s=0.02)
    emitter.submit(emitter_event(0))
    wait_until(lambda: emitter.stats().num_partitions == 4)
    kafka.partitions = 7
    wait_until(lambda: emitter.stats().num_partitions == 7)
    before = len(kafka.records)
    for i in range(200):
        emitter.submit(emitter_event(i))
    emitter.close(timeout_s=5)
    assert len(kafka.records) > before
    for partition, _, value in kafka.records[before:]:
        assert all(
            partition_for_key(table_key(e), 7) == partition for e in decode_batch(value).valid
        )


# -- failures -------------------------------------------------------------------------------


def test_reconnects_with_backoff_until_kafka_answers(
    make_emitter: Callable[..., KafkaEmitter], kafka: FakeKafka
) -> None:
    kafka.start_failures = 3
    emitter = make_emitter()
    for i in range(100):
        emitter.submit(emitter_event(i))
    wait_until(lambda: emitter.stats().sent_events == 100)
    assert kafka.starts == 4


def test_a_failed_send_is_requeued_and_sent_again(
    make_emitter: Callable[..., KafkaEmitter], kafka: FakeKafka
) -> None:
    kafka.send_failures = [KafkaTimeoutError(), KafkaTimeoutError()]
    emitter = make_emitter(batch_max_events=10)
    emitter.start()
    wait_until(lambda: emitter.stats().connected)
    for i in range(100):
        emitter.submit(emitter_event(i))
    wait_until(lambda: emitter.stats().sent_events == 100)
    stats = emitter.close()
    assert stats.send_errors == 2 and stats.requeued == 20 and stats.dropped_total == 0
    assert kafka.starts >= 2  # a failed send rebuilds the producer
    assert len({e.request_id for e in kafka.all_events()}) == 100


def test_a_record_the_broker_refuses_is_dropped_and_counted_not_retried(
    make_emitter: Callable[..., KafkaEmitter], kafka: FakeKafka
) -> None:
    kafka.send_failures = [MessageSizeTooLargeError()]
    emitter = make_emitter(batch_max_events=10)
    emitter.start()
    wait_until(lambda: emitter.stats().connected)
    for i in range(10):
        emitter.submit(emitter_event(i, routes=1))
    wait_until(lambda: emitter.stats().dropped_rejected == 10)
    for i in range(10, 20):
        emitter.submit(emitter_event(i, routes=1))
    stats = emitter.close()
    assert stats.sent_events == 10 and stats.requeued == 0 and settled(stats) == 20


def test_requeue_goes_to_the_front_and_respects_the_bound() -> None:
    queue = _BoundedQueue(maxlen=5, wake_at=1)
    queue.events.extend([emitter_event(i) for i in (10, 11, 12)])
    queue.requeue([emitter_event(i) for i in (1, 2, 3, 4)])  # room for 2: the oldest 2 go
    assert [_rid(e) for e in queue.events] == [
        emitter_event(i).request_id for i in (3, 4, 10, 11, 12)
    ]
    assert queue.counts.requeued == 2 and queue.counts.dropped_queue_full == 2
    assert [_rid(e) for e in queue.drain(3)] == [emitter_event(i).request_id for i in (3, 4, 10)]


def test_submit_never_raises_even_on_garbage(
    make_emitter: Callable[..., KafkaEmitter],
) -> None:
    emitter = make_emitter()
    emitter.submit(None)  # type: ignore[arg-type]
    emitter.submit(BASE)
    stats = emitter.close()
    assert stats.dropped_invalid == 1 and stats.sent_events == 1 and settled(stats) == 2


# -- close ------------------------------------------------------------------------------------


def test_close_sends_everything_queued_when_kafka_is_up(
    make_emitter: Callable[..., KafkaEmitter], kafka: FakeKafka
) -> None:
    emitter = make_emitter(flush_interval_s=30)  # only close can flush what is under a batch
    for i in range(123):
        emitter.submit(emitter_event(i))
    stats = emitter.close(timeout_s=5)
    assert stats.sent_events == 123 and stats.dropped_on_close == 0 and stats.queue_depth == 0
    assert len(kafka.all_events()) == 123


def test_close_with_kafka_down_returns_by_the_deadline_and_counts_the_rest() -> None:
    emitter = KafkaEmitter(NOWHERE, service="checkout", topic="probe")
    for i in range(1_000):
        emitter.submit(emitter_event(i))
    started = time.monotonic()
    stats = emitter.close(timeout_s=0.5)
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 2.0
    assert stats.dropped_on_close == 1_000 and stats.sent_events == 0 and stats.queue_depth == 0


def test_close_with_kafka_down_and_nothing_queued_returns_at_once() -> None:
    emitter = KafkaEmitter(NOWHERE, service="checkout", topic="probe").start()
    time.sleep(0.05)
    started = time.monotonic()
    emitter.close(timeout_s=5)
    assert time.monotonic() - started < 1.0


def test_close_when_acks_never_come_returns_in_time_and_counts_in_flight(
    make_emitter: Callable[..., KafkaEmitter], kafka: FakeKafka
) -> None:
    kafka.hold_acks = True
    emitter = make_emitter(send_timeout_s=30)
    for i in range(300):
        emitter.submit(emitter_event(i))
    started = time.monotonic()
    stats = emitter.close(timeout_s=0.5)
    assert time.monotonic() - started < 1.5
    assert stats.sent_events == 0 and stats.dropped_on_close == 300 and settled(stats) == 300


@pytest.mark.parametrize("stuck", ["acks", "sends"])
def test_close_cuts_short_a_cycle_that_is_stuck(
    make_emitter: Callable[..., KafkaEmitter], kafka: FakeKafka, stuck: str
) -> None:
    """Waiting for acks that never come, or in a send() that never returns."""
    setattr(kafka, f"hold_{stuck}", True)
    emitter = make_emitter(send_timeout_s=30, flush_interval_s=0.01)
    for i in range(100):
        emitter.submit(emitter_event(i))
    wait_until(lambda: emitter.stats().queue_depth == 0)  # drained: the cycle is stuck
    time.sleep(0.05)
    started = time.monotonic()
    stats = emitter.close(timeout_s=0.3)
    assert time.monotonic() - started < 1.0
    assert stats.dropped_on_close == 100 and settled(stats) == 100


def test_submit_after_close_is_counted_and_dropped(
    make_emitter: Callable[..., KafkaEmitter],
) -> None:
    emitter = make_emitter()
    emitter.submit(BASE)
    emitter.close()
    emitter.submit(BASE)
    stats = emitter.close()  # idempotent
    assert stats.submitted == 2 and stats.enqueued == 1 and stats.dropped_on_close == 1


def test_context_manager_starts_and_closes(
    make_emitter: Callable[..., KafkaEmitter], kafka: FakeKafka
) -> None:
    with make_emitter() as emitter:
        emitter.submit(BASE)
    assert emitter.stats().sent_events == 1


async def test_async_context_manager_does_not_block_the_loop() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with KafkaEmitter(NOWHERE, service="checkout", topic="probe") as emitter:
        emitter.submit(BASE)
        task = asyncio.create_task(ticker())
        stats = await emitter.aclose(timeout_s=0.5)  # Kafka is down: takes the whole 0.5 s
    task.cancel()
    assert ticks >= 10  # the loop kept running while close waited (~50 unloaded)
    assert stats.dropped_on_close == 1


# -- the hot path under an outage: bound, drop-oldest, speed, threads -------------------------


def test_a_million_submits_with_kafka_down_keep_memory_flat(
    request: pytest.FixtureRequest,
) -> None:
    emitter = KafkaEmitter(NOWHERE, service="checkout", topic="probe")  # queue_max 100_000
    process = psutil.Process()
    for i in range(300_000):
        emitter.submit(emitter_event(i))
    gc.collect()
    rss_full = process.memory_info().rss
    for i in range(300_000, 1_000_000):
        emitter.submit(emitter_event(i))
    gc.collect()
    growth = process.memory_info().rss - rss_full
    stats = emitter.stats()
    assert stats.queue_depth == 100_000
    assert stats.submitted == stats.enqueued == 1_000_000
    assert stats.dropped_queue_full == 900_000 and stats.sent_events == 0
    # drop-oldest: the oldest event still queued is the 900_001st submitted
    assert _rid(emitter._queue.events[0]) == emitter_event(900_000).request_id
    record(request, "rss_growth_mb_after_queue_full", round(growth / 2**20, 1))
    assert growth < 40 * 2**20
    emitter.close(timeout_s=0.2)


def test_submit_does_not_wait_for_an_unreachable_kafka(
    request: pytest.FixtureRequest,
) -> None:
    emitter = KafkaEmitter(NOWHERE, service="checkout", topic="probe", queue_max=1_000)
    events = [emitter_event(i) for i in range(10_000)]
    emitter.submit(events[0])  # starts the thread
    durations = []
    started = time.perf_counter()
    for event in events:
        t0 = time.perf_counter_ns()
        emitter.submit(event)
        durations.append(time.perf_counter_ns() - t0)
    total = time.perf_counter() - started
    durations.sort()
    record(request, "submit_p50_us", durations[len(durations) // 2] / 1000)
    record(request, "submit_p99_us", durations[int(len(durations) * 0.99)] / 1000)
    assert total < 1.0
    assert emitter.stats().dropped_queue_full == 10_001 - 1_000
    emitter.close(timeout_s=0.2)


def test_many_threads_submitting_add_up_with_kafka_down() -> None:
    emitter = KafkaEmitter(NOWHERE, service="checkout", topic="probe", queue_max=5_000)
    per_thread, threads = 20_000, 8
    barrier = threading.Barrier(threads)

    def work(offset: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            emitter.submit(emitter_event(offset + i))

    workers = [threading.Thread(target=work, args=(n * per_thread,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stats = emitter.close(timeout_s=0.2)
    total = per_thread * threads
    assert stats.submitted == stats.enqueued == total
    assert stats.dropped_queue_full == total - 5_000
    assert stats.dropped_on_close == 5_000 and settled(stats) == total


def test_many_threads_submitting_while_sending_lose_nothing_uncounted(
    make_emitter: Callable[..., KafkaEmitter], kafka: FakeKafka
) -> None:
    emitter = make_emitter(queue_max=2_000, batch_max_events=100)
    per_thread, threads = 10_000, 6

    def work(offset: int) -> None:
        for i in range(per_thread):
            emitter.submit(emitter_event(offset + i))

    workers = [threading.Thread(target=work, args=(n * per_thread,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stats = emitter.close(timeout_s=5)
    total = per_thread * threads
    assert stats.submitted == stats.enqueued == total
    assert stats.dropped_on_close == 0 and settled(stats) == total
    assert len(kafka.all_events()) == stats.sent_events > 0


# -- probe records: the event is built in the emitter's thread ------------------------------


def test_records_become_the_same_events_in_the_thread(
    make_emitter: Callable[..., KafkaEmitter], kafka: FakeKafka
) -> None:
    emitter = make_emitter(batch_max_events=50)
    records = [emitter_record(i) for i in range(120)]
    for i, rec in enumerate(records):
        emitter.submit_record(rec)
        emitter.submit(emitter_event(1000 + i))  # events and records share the queue
    stats = emitter.close()
    assert stats.sent_events == stats.submitted == 240 and stats.dropped_total == 0
    sent = {e.request_id: e for e in kafka.all_events()}
    for rec in records:
        assert sent[rec.request_id] == materialize(rec)
    # Each event went to its table key's partition, as an event submitted as such does.
    for partition, events in kafka.events_by_partition().items():
        assert {partition_for_key(table_key(e), kafka.partitions) for e in events} == {partition}


def test_a_record_that_cannot_be_encoded_costs_only_itself(
    make_emitter: Callable[..., KafkaEmitter], kafka: FakeKafka
) -> None:
    records = [emitter_record(i) for i in range(20)]
    # A trace id JSON cannot hold: found when its record is encoded.
    broken = msgspec.structs.replace(emitter_record(99), trace_id=object())
    emitter = make_emitter(batch_max_events=50)
    for rec in records[:10] + [broken] + records[10:]:
        emitter.submit_record(rec)
    stats = emitter.close()
    assert stats.dropped_invalid == 1 and stats.sent_events == 20 and settled(stats) == 21
    assert sorted(kafka.all_events(), key=lambda e: e.request_id) == [
        materialize(rec) for rec in records
    ]


def test_a_failed_send_requeues_records_as_records(
    make_emitter: Callable[..., KafkaEmitter], kafka: FakeKafka
) -> None:
    kafka.send_failures = [KafkaTimeoutError()]
    emitter = make_emitter(batch_max_events=10)
    emitter.start()
    wait_until(lambda: emitter.stats().connected)
    records = [emitter_record(i) for i in range(10)]
    for rec in records:
        emitter.submit_record(rec)
    wait_until(lambda: emitter.stats().sent_events == 10)
    stats = emitter.close()
    assert stats.requeued > 0 and stats.send_errors == 1 and stats.dropped_total == 0
    assert sorted(kafka.all_events(), key=lambda e: e.request_id) == [
        materialize(rec) for rec in records
    ]


def test_default_flush_interval_is_three_tenths_of_a_second() -> None:
    """Fewer, fuller send cycles (each costs ~1 ms of CPU), yet the live view's p99 < 500 ms
    (bench/ws_fanout.py: 336 ms at 0.3 s)."""
    emitter = KafkaEmitter(NOWHERE, service="checkout", topic="probe")
    assert emitter._config.flush_interval_s == 0.3
    assert emitter._config.batch_max_events == 500
    emitter.close(timeout_s=0.1)


def test_submits_after_close_are_counted_as_submitted_and_dropped(
    make_emitter: Callable[..., KafkaEmitter],
) -> None:
    emitter = make_emitter()
    emitter.submit_record(emitter_record(0))
    emitter.close()
    emitter.submit_record(emitter_record(1))
    emitter.submit(emitter_event(2))
    stats = emitter.stats()
    assert (stats.submitted, stats.enqueued, stats.sent_events) == (3, 1, 1)
    assert stats.dropped_on_close == 2 and settled(stats) == 3


def _rid(item: object) -> str:
    """request_id of a queued item (these tests queue ProbeEvents, never raw records)."""
    assert isinstance(item, ProbeEvent)
    return item.request_id
