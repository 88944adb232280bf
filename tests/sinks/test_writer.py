"""The writer: batches to objects, durable offsets, retries, breaker, spool, back-pressure."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from pipeline.schema import decode_event
from sinks.jsonl import decode_jsonl, read_events
from sinks.keys import parse_key
from tables.alerting import decode_alert
from tests.sinks.conftest import MakeWriter
from tests.sinks.fakes import (
    T0,
    FakeClock,
    MemoryStore,
    critical_events,
    make_alert,
    ok_events,
    request_ids,
)

TOPIC = "egresswatch.probe-events.v1"


def feed(writer, events, *, per_record: int = 1, partition: int = 0, offset: int = 0) -> int:
    """Add ``events`` as Kafka records of ``per_record`` events; returns the next offset."""
    for start in range(0, len(events), per_record):
        writer.add_events(TOPIC, partition, offset, events[start : start + per_record])
        offset += 1
    return offset


async def test_count_closes_a_batch_into_one_object(make_writer: MakeWriter, store) -> None:
    writer = make_writer(max_records=10)
    events = critical_events(10)
    feed(writer, events)
    result = await writer.flush_due()
    assert result.durable == {(TOPIC, 0): 9}
    assert (result.objects, result.records, result.spooled) == (1, 10, 0)
    (key,) = store.objects
    assert key == (f"egresswatch/events/service=checkout/date=2025-11-24/hour=16/{TOPIC}+0+0.jsonl")
    assert read_events(store.objects[key]) == events


async def test_only_critical_events_by_default_and_all_with_info(make_writer, store) -> None:
    writer = make_writer()
    mixed = [*critical_events(3), *ok_events(4)]
    assert writer.add_events(TOPIC, 0, 0, mixed) == 3
    await writer.flush_all()
    assert len(store.lines()) == 3 and writer.stats().filtered == 4

    store.objects.clear()
    everything = make_writer(min_severity="info", spool_dir=None)
    everything.add_events(TOPIC, 1, 0, mixed)
    await everything.flush_all()
    assert sorted(request_ids(store.lines())) == sorted(e.request_id for e in mixed)


async def test_alerts_always_kept_under_alerts(make_writer, store) -> None:
    writer = make_writer()
    alerts = [make_alert(n) for n in range(3)]
    writer.add_alerts("egresswatch.alerts.v1", 0, 41, alerts[:2])
    writer.add_alerts("egresswatch.alerts.v1", 0, 42, alerts[2:])
    result = await writer.flush_all()
    assert result.durable == {("egresswatch.alerts.v1", 0): 42}
    (key,) = store.objects
    assert key.startswith("egresswatch/alerts/service=checkout/") and key.endswith("+0+41.jsonl")
    assert [decode_alert(line) for line in decode_jsonl(store.objects[key])] == alerts


async def test_split_by_service_and_hour_named_by_first_offset(make_writer, store) -> None:
    writer = make_writer(compress=True)
    writer.add_events(TOPIC, 2, 100, critical_events(2, start=T0 + 3599, service="a"))
    writer.add_events(TOPIC, 2, 101, critical_events(1, start=T0 + 10, service="b"))
    writer.add_events(TOPIC, 2, 102, critical_events(1, start=T0 + 3700, service="a", seed=5))
    await writer.flush_all()
    keys = {parse_key(k) for k in store.objects}
    assert {(k.service, k.hour - T0, k.first_offset, k.gzip) for k in keys} == {
        ("a", 0, 100, True),  # a's first event of hour 16 is in record 100
        ("a", 3600, 100, True),  # record 100's second event is at 17:00:00, so is 102's
        ("b", 0, 101, True),
    }
    assert len(store.lines()) == 4
    assert all(
        parse_key(key).hour <= decode_event(line).started_at < parse_key(key).hour + 3600
        for key in store.objects
        for line in decode_jsonl(store.objects[key])
    )


async def test_idle_flush_for_a_quiet_partition_and_age_for_a_busy_one(
    make_writer, store, clock: FakeClock
) -> None:
    writer = make_writer(idle_s=2.0, max_age_s=10.0)
    feed(writer, critical_events(3), partition=0)
    assert (await writer.flush_due()).objects == 0
    clock.advance(2.0)
    result = await writer.flush_due()
    assert result.objects == 1 and result.durable[(TOPIC, 0)] == 2

    offset = 0
    for n in range(12):  # a record every second: never idle, closed by age
        writer.add_events(TOPIC, 1, offset, critical_events(1, start=T0 + n, seed=n))
        offset += 1
        clock.advance(1.0)
        await writer.flush_due()
    assert writer.durable_offsets()[(TOPIC, 1)] == 9  # the batch opened at 0 closed at age 10


async def test_records_without_lines_still_become_ackable(make_writer, store, clock) -> None:
    writer = make_writer()
    writer.add_events(TOPIC, 0, 0, ok_events(5))  # nothing critical, nothing pending
    assert writer.durable_offsets() == {(TOPIC, 0): 0}
    writer.add_events(TOPIC, 0, 1, critical_events(1))
    writer.add_events(TOPIC, 0, 2, [])  # held behind offset 1
    assert writer.durable_offsets() == {(TOPIC, 0): 0}
    assert (await writer.flush_all()).durable == {(TOPIC, 0): 2}


async def test_redelivered_offsets_are_skipped(make_writer, store) -> None:
    writer = make_writer()
    feed(writer, critical_events(5))
    feed(writer, critical_events(5))  # the same offsets 0..4 again
    await writer.flush_all()
    assert len(store.lines()) == 5 and writer.stats().redelivered_skipped == 5


async def test_checksum_mismatch_is_retried_and_never_acknowledged(
    make_writer, store, clock
) -> None:
    writer = make_writer(max_records=5)
    store.corrupt_next = 1
    feed(writer, critical_events(5))
    result = await writer.flush_due()
    (key,) = store.objects
    assert [reason for k, reason in store.log] == ["corrupt", "ok"]
    assert read_events(store.objects[key]) == critical_events(5)  # the retry overwrote it
    stats = writer.stats()
    assert (stats.checksum_mismatches, stats.put_retries, stats.put_failures) == (1, 1, 0)
    assert result.durable == {(TOPIC, 0): 4}

    store.corrupt_next = 3  # every attempt damaged: not acknowledged as stored, spooled
    feed(writer, critical_events(5, seed=9), offset=5)
    result = await writer.flush_due()
    assert (result.objects, result.spooled) == (0, 1)
    assert writer.stats().spool_pending_batches == 1
    clock.advance(10)  # the failures opened the breaker: wait for its half-open probe
    await writer.drain_spool()
    assert read_events(store.objects[key.replace("+0+0", "+0+5")]) == critical_events(5, seed=9)


async def test_outage_spools_opens_breaker_then_drains_exactly_once(
    make_writer, store: MemoryStore, clock: FakeClock
) -> None:
    writer = make_writer(max_records=4)
    events = critical_events(40)
    store.down = True
    offset = 0
    for n in range(5):
        offset = feed(writer, events[n * 4 : n * 4 + 4], offset=offset)
        result = await writer.flush_due()
        assert result.durable[(TOPIC, 0)] == offset - 1  # durable in the spool: ackable
    stats = writer.stats()
    assert stats.breaker_state == "open" and stats.spooled_batches == 5
    puts_when_open = store.puts
    offset = feed(writer, events[20:24], offset=offset)
    await writer.flush_due()
    assert store.puts == puts_when_open  # open breaker: straight to the spool, no call
    clock.advance(30)
    assert writer.stats().upload_lag_s >= 30

    store.down = False
    await writer.drain_spool()  # half-open after 5 s: the probe succeeds, the rest follows
    offset = feed(writer, events[24:40], offset=offset)
    await writer.flush_due()
    stats = writer.stats()
    assert stats.breaker_state == "closed" and stats.spool_pending_batches == 0
    assert stats.upload_lag_s == 0.0 and stats.spool_bytes == 0
    ids = request_ids(store.lines())
    assert Counter(ids) == Counter(e.request_id for e in events)  # all, exactly once


async def test_spool_full_stalls_and_backpressures_until_recovery(
    make_writer, store: MemoryStore, clock: FakeClock
) -> None:
    writer = make_writer(max_records=10, spool_bytes=12_000, segment_bytes=4_000)
    store.down = True
    events = critical_events(200)
    offset = 0
    acked = -1
    while not writer.backpressure:
        offset = feed(writer, events[offset : offset + 10], offset=offset)
        acked = (await writer.flush_due()).durable.get((TOPIC, 0), -1)
    stats = writer.stats()
    assert stats.backpressure and (stats.spool_fill_ratio >= 0.9 or stats.stalled_batches)
    # the worker stops consuming; what it holds is not acked past `acked`
    offset = feed(writer, events[offset : offset + 10], offset=offset)
    result = await writer.flush_due()
    assert result.durable[(TOPIC, 0)] == acked < offset - 1
    assert result.stalled >= 1 and writer.backpressure

    store.down = False
    clock.advance(10)
    await asyncio.wait_for(writer.wait_writable(), 5)
    result = await writer.flush_all()
    await writer.drain_spool()
    assert result.durable[(TOPIC, 0)] == offset - 1
    assert not writer.backpressure and writer.stats().spool_pending_batches == 0
    assert Counter(request_ids(store.lines())) == Counter(e.request_id for e in events[:offset])


async def test_rejected_put_goes_to_the_spool_without_retry(make_writer, store) -> None:
    writer = make_writer(max_records=3)
    store.reject_next = 1
    feed(writer, critical_events(3))
    result = await writer.flush_due()
    assert (result.spooled, writer.stats().put_retries) == (1, 0)
    assert await writer.drain_spool() == 1 and len(store.lines()) == 3


async def test_restart_replays_the_spool_and_skips_what_it_holds(
    make_writer, store: MemoryStore, tmp_path
) -> None:
    writer = make_writer(max_records=5)
    store.down = True
    events = critical_events(10)
    feed(writer, events)
    assert (await writer.flush_due()).durable == {(TOPIC, 0): 9}
    # crash before the commit of offsets 0..9: Kafka delivers them again to a new writer
    store.down = False
    again = make_writer(max_records=5)
    assert again.durable_offsets() == {(TOPIC, 0): 9}
    feed(again, events)
    assert again.stats().redelivered_skipped == 10
    await again.drain_spool()
    assert Counter(request_ids(store.lines())) == Counter(e.request_id for e in events)


async def test_rewrite_after_a_crash_overwrites_the_same_object(make_writer, store, clock) -> None:
    events = critical_events(30)
    first = make_writer(idle_s=1.0)
    feed(first, events[:10])
    clock.advance(1.0)
    assert (await first.flush_due()).durable == {(TOPIC, 0): 9}
    # crash before offsets 0..9 were committed: a new worker gets 0..29 at once
    second = make_writer(max_records=30, spool_dir=None)
    feed(second, events)
    await second.flush_all()
    (key,) = store.objects
    assert key.endswith("+0+0.jsonl")
    assert request_ids(store.lines()) == [e.request_id for e in events]


async def test_discard_forgets_a_revoked_partition(make_writer, store) -> None:
    writer = make_writer()
    feed(writer, critical_events(3), partition=4)
    writer.discard([(TOPIC, 4)])
    assert (await writer.flush_all()).durable == {}
    feed(writer, critical_events(3), partition=4)  # delivered again later: taken again
    assert (await writer.flush_all()).durable == {(TOPIC, 4): 2}


async def test_concurrent_flush_and_drain(make_writer, store, clock) -> None:
    writer = make_writer(max_records=2)
    store.down = True
    events = critical_events(20)
    feed(writer, events[:10])
    await writer.flush_due()
    store.down = False
    clock.advance(10)
    feed(writer, events[10:], offset=10)
    await asyncio.gather(writer.flush_due(), writer.drain_spool(), writer.tick(), writer.tick())
    await writer.drain_spool()
    assert Counter(request_ids(store.lines())) == Counter(e.request_id for e in events)


def test_config_is_checked() -> None:
    from sinks.config import SinkConfig

    with pytest.raises(ValueError):
        SinkConfig(min_severity="fatal")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SinkConfig(prefix="../x")
    with pytest.raises(ValueError):
        SinkConfig(spool_low_water=0.9, spool_high_water=0.5)


async def test_local_store_gets_the_same_layout(tmp_path, clock) -> None:
    from sinks.config import SinkConfig
    from sinks.spool import Spool
    from sinks.stores import LocalStore
    from sinks.writer import SinkWriter
    from tests.sinks.fakes import breaker

    store = LocalStore(tmp_path / "sink")
    writer = SinkWriter(
        store,
        Spool(tmp_path / "spool", max_bytes=1 << 20),
        breaker(clock),
        config=SinkConfig(compress=True),
        clock=clock,
        monotonic=clock,
    )
    events = critical_events(5)
    feed(writer, events)
    await writer.flush_all()
    (key,) = await store.list_keys()
    assert parse_key(key).gzip and (tmp_path / "sink" / key).is_file()
    assert read_events((tmp_path / "sink" / key).read_bytes()) == events


async def test_a_flush_cancelled_while_rendering_leaves_the_batch_to_the_next(
    make_writer: MakeWriter, store
) -> None:
    writer = make_writer(max_records=10)
    events = critical_events(30)
    feed(writer, events, per_record=10)  # three closed batches, queued
    first = asyncio.create_task(writer.flush_due())
    await asyncio.sleep(0)  # it is now waiting for the first batch's render thread
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    result = await writer.flush_due()
    assert result.durable == {(TOPIC, 0): 2}
    assert sorted(request_ids(store.lines())) == sorted(e.request_id for e in events)


async def test_the_next_batch_renders_while_one_uploads(make_writer: MakeWriter, store) -> None:
    """One batch ahead: batch n + 1 is rendered by the time batch n's PUT starts."""
    writer = make_writer(max_records=10)
    feed(writer, critical_events(30), per_record=10)
    seen: list[int] = []
    put = store.put

    async def observing_put(key: str, data: bytes, md5: bytes | None = None) -> None:
        pending = [p for queue in writer._queues.values() for p in queue]
        seen.append(sum(p.rendering is not None for p in pending))
        await put(key, data, md5)

    store.put = observing_put
    await writer.flush_due()
    assert seen == [2, 2, 1]  # the one uploading and the next; the last has no next
