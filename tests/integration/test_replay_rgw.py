"""Offline replay against the real Ceph RGW (tests/rgw.py), through s3fs, and its CLI.

The objects are written by the sink itself (SinkWriter on S3Store, half of them gzip), plus an
overlapping batch and damaged objects in hours outside the ranges asked for; replay must give
exactly the model's events for any range, and the CLI its documented exit codes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.schema import ProbeEvent, encode_event
from sinks.batcher import BatchLimits
from sinks.config import SinkConfig, store_breaker
from sinks.errors import SinkRejected, SinkUnavailable
from sinks.keys import ObjectKey, hour_of, parse_key
from sinks.replay import DamagedObject, ReplaySource, UnknownService, replay
from sinks.s3 import S3Store
from sinks.spool import Spool
from sinks.writer import SinkWriter
from tests.eventgen import make_event
from tests.ports import free_port
from tests.rgw import S3Endpoint
from tests.sinks.fakes import T0

pytestmark = pytest.mark.integration

TOPIC = "egresswatch.probe-events.v1"
CLI = [sys.executable, "-m", "pipeline.cli", "replay"]
DAY = 86_400
# Damaged objects, in hours no range below reaches: the data spans T0 - 1 day .. T0 + 1 day,
# and the property test's ranges T0 - 1.2 days .. T0 + 3.7 days (since + the widest width).
FAR = (T0 - 3 * DAY, T0 + 5 * DAY)


def model(events: list[ProbeEvent], service: str, since: float, until: float):
    unique = {
        e.request_id: e for e in events if e.service == service and since <= e.started_at < until
    }
    return sorted(unique.values(), key=lambda e: (e.started_at, e.request_id))


class Stored:
    """What the bucket holds: the distinct events and every stored line (duplicates too)."""

    def __init__(self, events: list[ProbeEvent], lines: list[ProbeEvent]) -> None:
        self.events = events
        self.lines = lines

    def __repr__(self) -> str:
        return f"Stored({len(self.events)} events, {len(self.lines)} lines)"

    def count(self, service: str, since: float, until: float) -> int:
        return sum(1 for e in self.lines if e.service == service and since <= e.started_at < until)


async def write_with_the_sink(endpoint: S3Endpoint, bucket: str, tmp: Path) -> Stored:
    store = await S3Store.open(
        endpoint.url, endpoint.access_key, endpoint.secret_key, bucket, create_bucket=False
    )
    events = [
        make_event(
            service=service,
            started_at=T0 - DAY + n * 1234.5 + k,
            elapsed_ms=3.0,
            status_code=500 if n % 3 else 200,
        )
        for n in range(140)
        for k, service in enumerate(("checkout", "billing", "check"))
    ]
    try:
        for compress, part in ((False, 0), (True, 1)):
            writer = SinkWriter(
                store,
                Spool(tmp / f"spool{part}", max_bytes=1 << 22),
                store_breaker(),
                config=SinkConfig(
                    min_severity="info", compress=compress, limits=BatchLimits(max_records=9)
                ),
            )
            mine = events[part::2]
            for offset in range(0, len(mine), 3):
                writer.add_events(TOPIC, part, offset, mine[offset : offset + 3])
            await writer.flush_all()
        # The same events again under other names: an object overlapping earlier ones.
        again = SinkWriter(
            store, Spool(tmp / "spool-again", max_bytes=1 << 22), store_breaker(),
            config=SinkConfig(min_severity="info"),
        )  # fmt: skip
        again.add_events(TOPIC, 0, 10_001, events[100:160])
        await again.flush_all()
        for at in FAR:
            damaged = ObjectKey(
                "events", "checkout", hour_of(at), TOPIC, 9, 0, prefix="egresswatch"
            )
            await store.put(damaged.render(), b"{damaged\n")
    finally:
        await store.close()
    return Stored(events, events + events[100:160])


@pytest.fixture
async def stored(s3_endpoint: S3Endpoint, s3_bucket: str, tmp_path: Path) -> Stored:
    return await write_with_the_sink(s3_endpoint, s3_bucket, tmp_path)


def rgw_source(endpoint: S3Endpoint, bucket: str, **kwargs) -> ReplaySource:
    return ReplaySource.s3(endpoint.url, endpoint.access_key, endpoint.secret_key, bucket, **kwargs)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    service=st.sampled_from(["checkout", "billing", "check"]),
    since=st.floats(T0 - 1.2 * DAY, T0 + 1.2 * DAY),
    width=st.one_of(st.floats(1.0, 4 * 3600.0), st.floats(DAY, 2.5 * DAY)),
)
def test_replay_from_rgw_is_exactly_the_model(
    stored: Stored, s3_endpoint: S3Endpoint, s3_bucket: str, service, since, width
) -> None:
    until = since + width
    result = replay(rgw_source(s3_endpoint, s3_bucket), service=service, since=since, until=until)
    want = model(stored.events, service, since, until)
    assert list(result.events()) == want
    assert result.duplicates == stored.count(service, since, until) - len(want)
    assert all(
        parse_key(key).service == service and hour_of(since) <= parse_key(key).hour < until
        for key in result.objects
    )


async def test_overlap_is_deduplicated_and_damage_in_range_is_named(
    stored: Stored, s3_endpoint: S3Endpoint, s3_bucket: str
) -> None:
    source = rgw_source(s3_endpoint, s3_bucket)
    everything = await asyncio.to_thread(
        replay, source, service="checkout", since=T0 - DAY, until=T0 + DAY
    )
    want = model(stored.events, "checkout", T0 - DAY, T0 + DAY)
    assert list(everything.events()) == want
    assert everything.duplicates == stored.count("checkout", T0 - DAY, T0 + DAY) - len(want) > 0
    assert any(key.endswith(".jsonl.gz") for key in everything.objects)

    with pytest.raises(DamagedObject) as caught:
        await asyncio.to_thread(replay, source, service="checkout", since=FAR[0], until=FAR[0] + 60)
    assert "+9+0.jsonl" in caught.value.key


async def test_source_errors(stored: Stored, s3_endpoint: S3Endpoint, s3_bucket: str):
    def attempt(service: str = "checkout", endpoint=s3_endpoint, bucket=s3_bucket):
        source = rgw_source(endpoint, bucket)
        return replay(source, service=service, since=T0, until=T0 + 60)

    with pytest.raises(UnknownService, match="known services: billing, check, checkout"):
        await asyncio.to_thread(attempt, "nope")
    with pytest.raises(SinkRejected, match="no such bucket"):
        await asyncio.to_thread(attempt, bucket=f"{s3_bucket}-missing")
    wrong = S3Endpoint(s3_endpoint.url, s3_endpoint.access_key, "not-the-secret")
    with pytest.raises(SinkRejected, match="SignatureDoesNotMatch|AccessDenied|Forbidden"):
        await asyncio.to_thread(attempt, endpoint=wrong)
    closed = S3Endpoint(f"http://127.0.0.1:{free_port()}", "a", "b")
    started = time.monotonic()
    with pytest.raises(SinkUnavailable, match="Could not connect"):
        await asyncio.to_thread(attempt, endpoint=closed)
    assert time.monotonic() - started < 5


# ------------------------------------------------------------------------------------- CLI


def cli(*args: str, endpoint: S3Endpoint | None = None, bucket: str = "", timeout: float = 60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGRESSWATCH_")}
    if endpoint is not None:  # through the environment, as an operator would
        env |= {
            "EGRESSWATCH_S3_ENDPOINT": endpoint.url,
            "EGRESSWATCH_S3_ACCESS_KEY": endpoint.access_key,
            "EGRESSWATCH_S3_SECRET_KEY": endpoint.secret_key,
            "EGRESSWATCH_S3_BUCKET": bucket,
        }
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, timeout=timeout, check=False, cwd=Path.cwd()
    )


def test_cli_end_to_end(stored: Stored, s3_endpoint: S3Endpoint, s3_bucket: str, tmp_path):
    since, until = "2025-11-24T10:00:00Z", str(int(T0 + 5 * 3600))  # T0 is 16:00Z that day
    out = tmp_path / "checkout.jsonl"
    done = cli(
        "--endpoint", s3_endpoint.url, "--access-key", s3_endpoint.access_key,
        "--secret-key", s3_endpoint.secret_key, "--bucket", s3_bucket,
        "--service", "checkout", "--since", since, "--until", until, "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    want = model(stored.events, "checkout", T0 - 6 * 3600, T0 + 5 * 3600)
    assert out.read_bytes() == b"".join(encode_event(e) + b"\n" for e in want)
    summary = done.stderr.decode().strip().splitlines()[-1]
    assert summary.startswith(f"replayed {len(want)} events (") and "objects" in summary

    # Environment only, to stdout.
    done = cli("--service", "billing", "--since", since, "--until", until,
               endpoint=s3_endpoint, bucket=s3_bucket)  # fmt: skip
    assert done.returncode == 0, done.stderr
    want = model(stored.events, "billing", T0 - 6 * 3600, T0 + 5 * 3600)
    assert done.stdout == b"".join(encode_event(e) + b"\n" for e in want)


def test_cli_bad_arguments(stored: Stored, s3_endpoint: S3Endpoint, s3_bucket: str):
    span = ("--since", str(T0), "--until", str(T0 + 60))
    done = cli("--service", "nope", *span, endpoint=s3_endpoint, bucket=s3_bucket)
    assert done.returncode == 3, done.stderr
    assert b"no service 'nope'" in done.stderr and b"checkout" in done.stderr

    done = cli("--service", "checkout", "--since", str(T0), "--until", str(T0 - 60),
               endpoint=s3_endpoint, bucket=s3_bucket)  # fmt: skip
    assert done.returncode == 2 and b"since must be before until" in done.stderr

    closed = S3Endpoint(f"http://127.0.0.1:{free_port()}", "a", "b")
    started = time.monotonic()
    done = cli("--service", "checkout", *span, endpoint=closed, bucket=s3_bucket, timeout=30)
    elapsed = time.monotonic() - started
    assert done.returncode == 4, done.stderr
    assert b"cannot read s3://" in done.stderr and b"Could not connect" in done.stderr
    assert b"Traceback" not in done.stderr
    assert elapsed < 10, elapsed

    done = cli("--service", "checkout", *span, endpoint=s3_endpoint, bucket=f"{s3_bucket}-x")
    assert done.returncode == 4 and b"no such bucket" in done.stderr
