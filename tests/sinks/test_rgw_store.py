"""The sink against a real Ceph RGW (tests/rgw.py): keys, Content-MD5, an outage, a damaged spool.

The outage test is the S5 proof: a steady consumer adds records while radosgw is stopped; the
breaker opens, the spool fills to its bound, back-pressure stops the consumer; radosgw comes
back, the spool drains by itself, and every critical event is in RGW exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from pipeline.probe.breaker import BreakerConfig
from pipeline.schema import ProbeEvent
from sinks.batcher import BatchLimits
from sinks.config import SinkConfig, store_breaker
from sinks.jsonl import decode_jsonl, read_events
from sinks.keys import hour_of, parse_key
from sinks.s3 import S3Store
from sinks.spool import Spool
from sinks.writer import SinkWriter
from tables.alerting import decode_alert
from tests.eventgen import make_event
from tests.ports import free_port
from tests.rgw import RgwControl, S3Endpoint
from tests.sinks.fakes import T0, make_alert

pytestmark = pytest.mark.integration

TOPIC = "egresswatch.probe-events.v1"
FAST_BREAKER = BreakerConfig(
    failure_rate_threshold=0.5,
    sliding_window_size=6,
    minimum_number_of_calls=3,
    wait_duration_in_open_s=0.5,
    permitted_calls_in_half_open=1,
    max_wait_in_half_open_s=10.0,
)


async def open_store(endpoint: S3Endpoint, bucket: str, cls: type[S3Store] = S3Store) -> S3Store:
    return await cls.open(
        endpoint.url,
        endpoint.access_key,
        endpoint.secret_key,
        bucket,
        create_bucket=False,
        connect_timeout_s=1.0,
        read_timeout_s=5.0,
        put_timeout_s=5.0,
    )


def make_writer(store: S3Store, spool: Spool, **config: object) -> SinkWriter:
    return SinkWriter(store, spool, store_breaker(FAST_BREAKER), config=SinkConfig(**config))  # type: ignore[arg-type]


async def stored_lines(store: S3Store) -> dict[str, list[bytes]]:
    """Every object of the bucket, read back (16 GETs at a time)."""
    keys = await store.list_keys()
    gate = asyncio.Semaphore(16)

    async def read(key: str) -> list[bytes]:
        async with gate:
            return decode_jsonl(await store.get(key))

    return dict(zip(keys, await asyncio.gather(*(read(key) for key in keys)), strict=True))


def ids(lines: list[bytes]) -> Counter[str]:
    return Counter(msgspec.json.decode(line)["request_id"] for line in lines)


def events_for(
    n: int, rng: random.Random, *, start: float = T0, spread_s: float = 7200.0
) -> list[ProbeEvent]:
    """A mix: 3 in 4 critical (503 or a timeout), 1 in 4 fine; 3 services; times in
    ``start`` .. ``start + spread_s``."""
    events = []
    for i in range(n):
        kind = i % 4
        events.append(
            make_event(
                service=("checkout", "pay", "search")[i % 3],
                started_at=start + rng.uniform(0, spread_s),
                elapsed_ms=8_000.0 if kind == 2 else 20.0,
                status_code=200 if kind in (2, 3) else 503,
                rng=rng,
            )
        )
    return events


@pytest.mark.parametrize("compress", [False, True])
async def test_objects_have_the_documented_keys_and_content(
    s3_endpoint: S3Endpoint, s3_bucket: str, tmp_path: Path, compress: bool
) -> None:
    store = await open_store(s3_endpoint, s3_bucket)
    try:
        writer = make_writer(store, Spool(tmp_path, max_bytes=1 << 20), compress=compress)
        rng = random.Random(7)
        records = [events_for(8, rng) for _ in range(10)]
        for offset, events in enumerate(records):
            writer.add_events(TOPIC, 3, 100 + offset, events)
        alerts = [make_alert(n, service="pay") for n in range(3)]
        writer.add_alerts("egresswatch.alerts.v1", 0, 7, alerts)
        result = await writer.flush_all()
        assert result.durable == {(TOPIC, 3): 109, ("egresswatch.alerts.v1", 0): 7}

        objects = await stored_lines(store)
        critical = [e for events in records for e in events if e.severity == "critical"]
        for key, lines in objects.items():
            parsed = parse_key(key)
            assert parsed.prefix == "egresswatch" and parsed.gzip == compress
            assert key.endswith(".jsonl.gz" if compress else ".jsonl")
            if parsed.kind == "alerts":
                assert [decode_alert(line) for line in lines] == alerts
                assert parsed.first_offset == 7
                continue
            events = read_events(await store.get(key))
            assert {(e.service, hour_of(e.started_at)) for e in events} == {
                (parsed.service, parsed.hour)
            }
            first = min(100 + o for o, evs in enumerate(records) for e in evs if e in events)
            assert parsed.first_offset == first
        event_lines = [ln for k, lns in objects.items() if "/events/" in k for ln in lns]
        assert ids(event_lines) == Counter(e.request_id for e in critical)
        assert len(objects) == 1 + len({(e.service, hour_of(e.started_at)) for e in critical})
    finally:
        await store.close()


class WrongMd5(S3Store):
    """Sends a wrong Content-MD5 for its first ``wrong`` PUTs (as a corrupted body would)."""

    wrong = 1

    def content_md5(self, md5: bytes) -> str:
        if self.wrong > 0:
            self.wrong -= 1
            return base64.b64encode(hashlib.md5(b"not the body").digest()).decode()
        return super().content_md5(md5)


async def test_a_wrong_checksum_is_retried_and_never_acknowledged(
    s3_endpoint: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    store = await open_store(s3_endpoint, s3_bucket, WrongMd5)
    assert isinstance(store, WrongMd5)
    try:
        writer = make_writer(store, Spool(tmp_path, max_bytes=1 << 20))
        events = [e for e in events_for(40, random.Random(1), start=T0) if e.severity == "critical"]
        events = [
            msgspec.structs.replace(e, service="checkout", started_at=T0 + i)
            for i, e in enumerate(events)
        ]
        writer.add_events(TOPIC, 0, 0, events)
        result = await writer.flush_all()
        stats = writer.stats()
        assert (stats.checksum_mismatches, stats.put_retries, stats.put_failures) == (1, 1, 0)
        assert result.durable == {(TOPIC, 0): 0} and result.objects == 1
        (key,) = await store.list_keys()
        assert read_events(await store.get(key)) == events  # the retry's body, whole

        store.wrong = 10**6  # every PUT refused with BadDigest: nothing may be acknowledged
        writer.add_events(
            TOPIC, 0, 1, [msgspec.structs.replace(e, started_at=T0 + 3600) for e in events]
        )
        result = await writer.flush_all()
        assert (result.objects, result.spooled) == (0, 1)  # durable in the spool only
        assert await store.list_keys() == [key]  # RGW wrote nothing for a bad digest
        assert writer.stats().checksum_mismatches == 1 + 3

        store.wrong = 0
        await asyncio.sleep(FAST_BREAKER.wait_duration_in_open_s + 0.1)
        assert await writer.drain_spool() == 1
        assert len(await store.list_keys()) == 2
    finally:
        await store.close()


class Sample(msgspec.Struct):
    at: float
    received: int
    spool_bytes: int
    fill: float
    breaker: str
    backpressure: bool
    lag: float
    acked: int


async def test_rgw_outage_spools_backpressures_then_drains_exactly_once(
    rgw_control: RgwControl, s3_bucket: str, tmp_path: Path
) -> None:
    store = await open_store(rgw_control.endpoint, s3_bucket)
    spool_bound = 192 * 1024
    spool = Spool(tmp_path / "spool", max_bytes=spool_bound, segment_bytes=16 * 1024)
    writer = make_writer(
        store,
        spool,
        limits=BatchLimits(max_records=30, max_age_s=1.0, idle_s=0.3),
        spool_high_water=0.8,
        spool_low_water=0.3,
    )
    rng = random.Random(42)
    partitions = 2
    # 3 of 4 events critical; event time moves on 0.5 s per record and crosses an hour
    records = [events_for(4, rng, start=T0 + 3000 + n / 2, spread_s=1) for n in range(1200)]
    samples: list[Sample] = []
    blocked_s = 0.0
    added_while_blocked = 0
    consumed = 0
    done = asyncio.Event()

    async def consume() -> None:  # the sink agent: ~150 records/s, stops under back-pressure
        nonlocal blocked_s, consumed
        for n, events in enumerate(records):
            if writer.backpressure:
                t = time.monotonic()
                await writer.wait_writable(0.05)
                blocked_s += time.monotonic() - t
            writer.add_events(TOPIC, n % partitions, n // partitions, events)
            consumed += 1
            await asyncio.sleep(0.0066)
        done.set()

    async def ticker() -> None:  # the worker's timer: flush what is due, drain the spool
        while not done.is_set():
            result = await writer.tick()
            stats = writer.stats()
            samples.append(
                Sample(
                    time.monotonic(),
                    stats.received,
                    stats.spool_bytes,
                    stats.spool_fill_ratio,
                    stats.breaker_state,
                    stats.backpressure,
                    stats.upload_lag_s,
                    sum(result.durable.values()),
                )
            )
            await asyncio.sleep(0.1)

    try:
        async with asyncio.timeout(90):
            tasks = [asyncio.create_task(consume()), asyncio.create_task(ticker())]
            await asyncio.sleep(1.0)
            await rgw_control.astop()
            stopped_at = time.monotonic()
            # keep radosgw down until the spool passed its high-water mark: back-pressure
            while not (samples and samples[-1].backpressure):
                await asyncio.sleep(0.1)
            held_at = time.monotonic()
            during = [s for s in samples if s.at >= stopped_at]
            received_at_hold = writer.stats().received
            await asyncio.sleep(1.0)  # back-pressure: the consumer adds nothing meanwhile
            added_while_blocked = writer.stats().received - received_at_hold
            await rgw_control.astart()
            restarted_at = time.monotonic()
            outage_s = restarted_at - stopped_at
            await done.wait()
            await asyncio.gather(*tasks)
            while writer.stats().spool_pending_batches or writer.stats().open_records:
                await writer.tick()
                await writer.flush_all()
                await asyncio.sleep(0.05)
            final = await writer.flush_all()

        stats = writer.stats()
        opened_s = min(s.at for s in during if s.breaker == "open") - stopped_at
        drained_s = min(s.at for s in samples if s.at > restarted_at and not s.spool_bytes)
        drained_s -= restarted_at
        assert consumed == len(records)
        assert any(s.breaker == "open" for s in during), "the breaker never opened"
        assert max(s.spool_bytes for s in samples) <= spool_bound
        assert max(s.fill for s in during) >= 0.8, "the spool never reached high water"
        assert any(s.backpressure for s in during) and blocked_s > 0.5
        assert added_while_blocked == 0, "records were consumed under back-pressure"
        assert held_at - stopped_at < 60
        # every offset of every partition is acked, and every critical event is in RGW once
        assert final.durable == {
            (TOPIC, p): len(records) // partitions - 1 for p in range(partitions)
        }
        objects = await stored_lines(store)
        got = ids([line for lines in objects.values() for line in lines])
        expected = Counter(e.request_id for evs in records for e in evs if e.severity == "critical")
        assert got == expected
        assert stats.spool_pending_batches == 0 and stats.spool_bytes == 0
        assert stats.breaker_state == "closed" and not stats.backpressure
        assert stats.quarantined_segments == 0 and stats.redelivered_skipped == 0
        assert stats.spooled_batches > 0 and stats.drained_batches == stats.spooled_batches
        print(
            f"\nRGW outage: down {outage_s:.1f} s; breaker open after {opened_s:.2f} s; "
            "spool peak "
            f"{max(s.spool_bytes for s in samples)} B of {spool_bound} "
            f"({max(s.fill for s in samples):.0%}); {stats.spooled_batches} batches "
            f"({stats.spooled_records} records) spooled; consumer held back {blocked_s:.1f} s; "
            f"upload lag peak {max(s.lag for s in samples):.1f} s; spool empty "
            f"{drained_s:.2f} s after restart (by the timer's ticks); "
            f"{sum(expected.values())} critical events in {len(objects)} objects, each once; "
            f"put failures {stats.put_failures}, "
            f"retries {stats.put_retries}"
        )
    finally:
        await store.close()


async def test_a_damaged_spool_segment_is_quarantined_and_the_rest_drained(
    s3_endpoint: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    # 1. RGW unreachable (nothing listens on the port): every batch goes to the spool
    dead = await open_store(S3Endpoint(f"http://127.0.0.1:{free_port()}", "k", "s"), s3_bucket)
    spool = Spool(spool_dir, max_bytes=1 << 22, segment_bytes=4096)
    first = make_writer(dead, spool, limits=BatchLimits(max_records=10))
    batches = []
    for n in range(6):
        events = [
            msgspec.structs.replace(e, service="checkout", started_at=T0 + n)
            for e in events_for(14, random.Random(n))
            if e.severity == "critical"
        ]
        first.add_events(TOPIC, 0, n, events)
        batches.append(events)
    result = await first.flush_due()
    assert result.durable == {(TOPIC, 0): 5} and first.stats().spool_pending_batches == 6
    await dead.close()
    spool.close()

    # 2. a bit flips in the middle of the third segment, then the worker restarts
    segments = sorted(spool_dir.glob("seg-*.spool"))
    assert len(segments) == 6  # one batch per 4 KiB segment
    damaged = segments[2]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))

    store = await open_store(s3_endpoint, s3_bucket)
    try:
        again = make_writer(store, Spool(spool_dir, max_bytes=1 << 22, segment_bytes=4096))
        assert again.durable_offsets() == {(TOPIC, 0): 5}
        assert await again.drain_spool() == 5
        stats = again.stats()
        assert (stats.quarantined_segments, stats.lost_spool_frames) == (1, 1)
        assert stats.spool_pending_batches == 0
        assert (spool_dir / "quarantine" / damaged.name).exists()
        assert not list(spool_dir.glob("seg-*.spool"))
        assert await again.drain_spool() == 0  # never looped on
        objects = await stored_lines(store)
        assert ids([ln for lns in objects.values() for ln in lns]) == Counter(
            e.request_id for n, evs in enumerate(batches) if n != 2 for e in evs
        )
    finally:
        await store.close()
