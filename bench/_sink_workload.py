"""sink_throughput's workload and its RGW plumbing: critical events, Kafka-like records, buckets.

The events are what a fleet's probes report during an incident, all of them critical under
``pipeline.schema.derive_severity`` (5xx, read and connect timeouts, refused connections, calls
over 5 s), over 10 services x 8 routes x GET/POST, at 250 events/s of event time from a fixed,
hour-aligned anchor (the object layout is the same in every run). They are packed as the
emitter packs them: grouped by ``partition_for_key(table_key(event), partitions)`` and cut
into records of ``per_record`` events, numbered by offset per partition; records are handed
out round-robin over the partitions, as a consumer's fetches interleave them.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import s3fs

from pipeline.partitioning import partition_for_key
from pipeline.schema import (
    ProbeEvent,
    check_invariants,
    derive_severity,
    encode_event,
    table_key,
)

__all__ = [
    "ROOT",
    "Endpoint",
    "Record",
    "delete_bucket",
    "fetch_objects",
    "make_events",
    "make_records",
    "open_fs",
    "request_id_of",
    "rgw_up",
]

ROOT: Final = Path(__file__).resolve().parents[1]
ANCHOR: Final = 1_764_000_000.0 + 1_800.0  # 2025-11-24 16:30 UTC
CRITICAL_RATE: Final = 250.0  # critical events per second of event time
_SERVICES: Final = (
    "checkout", "search", "cart", "users", "orders",
    "payments", "inventory", "shipping", "auth", "recommend",
)  # fmt: skip
_ROUTES: Final = (
    "/v1/users/{id}", "/v1/orders/{id}/items", "/v1/search", "/v2/carts/{id}",
    "/v1/auth/token", "/v1/payments/{id}/capture", "/v1/inventory/{sku}", "/v1/shipping/quote",
)  # fmt: skip
# (outcome, status, error_class, weight): what a critical event is, and how often
_FAILURES: Final = (
    ("http_error", 503, "http_5xx", 0.55),
    ("http_error", 502, "http_5xx", 0.12),
    ("http_error", 504, "http_5xx", 0.08),
    ("http_error", 500, "http_5xx", 0.05),
    ("timeout", None, "read_timeout", 0.10),
    ("timeout", None, "connect_timeout", 0.02),
    ("connect_error", None, "connection_refused", 0.05),
    ("ok", 200, None, 0.03),  # a success that took over 5 s
)

Record = tuple[int, int, list[ProbeEvent], list[bytes]]
"""(partition, offset, events, received): one Kafka record's decoded events and the bytes
each was decoded from (what ``IngestResult.lines`` hands the worker's sink)."""


def make_events(n: int, *, seed: int = 20241129) -> list[ProbeEvent]:
    """``n`` valid critical events (checked with ``check_invariants`` on the way)."""
    rng = random.Random(seed)
    weights = [w for *_, w in _FAILURES]
    events = []
    for i in range(n):
        service = rng.choice(_SERVICES)
        outcome, status, error, _ = rng.choices(_FAILURES, weights)[0]
        responded = status is not None
        if outcome == "ok":
            elapsed = round(rng.uniform(5_000.0, 12_000.0), 3)
        elif outcome == "timeout":
            elapsed = round(rng.choice((2_000.0, 5_000.0, 10_000.0)) + rng.random(), 3)
        elif outcome == "connect_error":
            elapsed = round(rng.uniform(0.2, 3.0), 3)
        else:
            elapsed = round(rng.lognormvariate(4.4, 0.8), 3)  # median ~80 ms
        fields: dict[str, Any] = {
            "service": service,
            "started_at": round(ANCHOR + i / CRITICAL_RATE, 6),
            "elapsed_ms": elapsed,
            "method": rng.choice(("GET", "POST")),
            "route": rng.choice(_ROUTES),
            "upstream": f"{rng.choice(_SERVICES)}.svc.internal:8443",
            "outcome": outcome,
            "status_code": status,
            "error_class": error,
            "attempt": rng.choice((1, 1, 1, 2, 3)),
            "trace_id": f"{rng.getrandbits(128) | 1:032x}",
            "request_id": f"{rng.getrandbits(64) | 1:016x}",
            "logical_request_id": f"{rng.getrandbits(64) | 1:016x}",
            "bytes_sent": rng.randrange(0, 4_000),
            "bytes_received": rng.randrange(100, 20_000) if responded else 0,
            "internal_ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "external_ip": f"10.96.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "breaker_state": "closed",
            "pool_wait_ms": round(rng.expovariate(5.0), 3),
            "connect_ms": round(rng.uniform(0.3, 2.0), 3) if responded else None,
            "ttfb_ms": round(elapsed * 0.85, 3) if responded else None,
            "transfer_ms": round(elapsed * 0.1, 3) if responded else None,
        }
        fields["severity"] = derive_severity(
            outcome=outcome, status_code=status, elapsed_ms=elapsed, attempt=fields["attempt"]
        )
        assert fields["severity"] == "critical", fields
        event = ProbeEvent(**fields)
        check_invariants(event)
        events.append(event)
    return events


def make_records(events: list[ProbeEvent], partitions: int, per_record: int) -> list[Record]:
    """Group by partition as the emitter does, cut into records, interleave round-robin."""
    groups: dict[int, list[ProbeEvent]] = {}
    for event in events:
        groups.setdefault(partition_for_key(table_key(event), partitions), []).append(event)
    lanes = [
        [
            (
                p,
                offset,
                chunk[lo : lo + per_record],
                [encode_event(e) for e in chunk[lo : lo + per_record]],
            )
            for offset, lo in enumerate(range(0, len(chunk), per_record))
        ]
        for p, chunk in sorted(groups.items())
    ]
    records: list[Record] = []
    for i in range(max(map(len, lanes))):
        records.extend(lane[i] for lane in lanes if i < len(lane))
    return records


def request_id_of(line: bytes) -> bytes:
    """The ``request_id`` of one JSONL line of an event (without decoding the whole line)."""
    at = line.index(b'"request_id":"') + 14
    return line[at : at + 16]


# -- RGW ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    url: str
    access_key: str
    secret_key: str


def rgw_up() -> Endpoint:
    """Start the project's local RGW if needed (``scripts/rgw-local up``, idempotent)."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "rgw-local"), "up"], check=True, capture_output=True, text=True
    ).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return Endpoint(values["S3_ENDPOINT"], values["S3_ACCESS_KEY"], values["S3_SECRET_KEY"])


async def open_fs(endpoint: Endpoint) -> s3fs.S3FileSystem:
    """A plain async s3fs on the endpoint: path-style addressing (RGW), and no CRC32 trailer
    (``when_required``), so its PUTs carry the same bytes on the wire as ``S3Store``'s."""
    fs = s3fs.S3FileSystem(
        key=endpoint.access_key,
        secret=endpoint.secret_key,
        endpoint_url=endpoint.url,
        asynchronous=True,
        skip_instance_cache=True,
        use_listings_cache=False,
        config_kwargs={
            "s3": {"addressing_style": "path"},
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
        },
    )
    await fs.set_session()
    return fs


async def fetch_objects(fs: s3fs.S3FileSystem, bucket: str) -> dict[str, bytes]:
    """Every object of ``bucket``, by key."""
    paths = await fs._find(bucket)
    gate = asyncio.Semaphore(8)

    async def get(path: str) -> tuple[str, bytes]:
        async with gate:
            return path.removeprefix(f"{bucket}/"), bytes(await fs._cat_file(path))

    return dict(await asyncio.gather(*(get(path) for path in paths)))


async def delete_bucket(fs: s3fs.S3FileSystem, bucket: str) -> None:
    """Delete every object of ``bucket``, then the bucket (a missing bucket is fine)."""
    try:
        paths = await fs._find(bucket)
    except FileNotFoundError:
        return
    gate = asyncio.Semaphore(16)

    async def rm(path: str) -> None:
        async with gate:
            await fs._rm_file(path)

    await asyncio.gather(*(rm(path) for path in paths))
    try:
        await fs._call_s3("delete_bucket", Bucket=bucket)
    except FileNotFoundError:
        pass
