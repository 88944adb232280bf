"""pipeline_throughput's workload: probe events, their Kafka records, and the topics' life.

The events are what a fleet of probes would send: 200 (service, method, route) keys with
Zipf-like popularity, lognormal latencies (median 40 ms), 6% errors of four kinds, 3%
retries. They are packed as the emitter packs them: grouped by
``partition_for_key(table_key(event), partitions)``, cut into batch envelopes of
``per_record`` events, encoded with ``encode_batch``; the first ``single_n`` of them are also
kept one per record, for the naive Faust baseline.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from bisect import bisect
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaProducer

from pipeline.envelope import encode_batch
from pipeline.partitioning import key_bytes, partition_for_key
from pipeline.schema import ProbeEvent, derive_severity, encode_event, table_key

__all__ = ["Record", "Workload", "build_workload", "produce"]

ROOT: Final = Path(__file__).resolve().parents[1]
_REGIONS: Final = [f"svc-{name}" for name in ("checkout", "search", "cart", "users", "orders")]
_SERVICES: Final = [*_REGIONS, *(f"{s}-eu" for s in _REGIONS)]  # 10 services
_ROUTES: Final = [
    "/v1/users/{id}", "/v1/orders/{id}/items", "/v1/search", "/v2/carts/{id}", "/v1/auth/token",
    "/v1/payments/{id}/capture", "/v1/inventory/{sku}", "/v1/recommendations", "/healthz",
    "/v1/shipping/quote",
]  # fmt: skip
_KEYS: Final = [(s, r, m) for s in _SERVICES for r in _ROUTES for m in ("GET", "POST")]

Record = tuple[int, bytes, bytes]  # (partition, key, value)


@dataclass(frozen=True)
class Workload:
    """The events, as batch-envelope records and as one-event records (the naive topic)."""

    events: int
    batched: list[Record]  # value: a batch envelope; per partition, in event-time order
    single: list[Record]  # value: one event
    event_bytes: float  # mean size of one encoded event


def make_events(n: int, *, seed: int = 7, fleet_rate: float = 5_000.0) -> list[ProbeEvent]:
    """``n`` valid events over 200 keys (Zipf-weighted), lognormal latencies, ~6% errors.

    Event times advance as a fleet emitting ``fleet_rate`` events/s would, ending now.
    """
    rng = random.Random(seed)
    cumulative = list(accumulate(1.0 / (rank + 1) ** 0.8 for rank in range(len(_KEYS))))
    keys = list(_KEYS)
    rng.shuffle(keys)  # which key is popular is random, not alphabetical
    start = time.time() - n / fleet_rate
    events: list[ProbeEvent] = []
    for i in range(n):
        service, route, method = keys[bisect(cumulative, rng.random() * cumulative[-1])]
        elapsed = round(min(rng.lognormvariate(math.log(40.0), 1.0), 60_000.0), 3)
        u = rng.random()
        outcome: str = "ok"
        status: int | None = 200
        error: str | None = None
        if u < 0.02:
            outcome, status, error = "http_error", 503, "http_5xx"
        elif u < 0.04:
            outcome, status, error = "http_error", 404, "http_4xx"
        elif u < 0.05:
            outcome, status, error = "timeout", None, "read_timeout"
        elif u < 0.06:
            outcome, status, error = "connect_error", None, "connection_refused"
        attempt = 2 if rng.random() < 0.03 else 1
        fields: dict[str, Any] = {
            "service": service,
            "started_at": start + i / fleet_rate,
            "elapsed_ms": elapsed,
            "method": method,
            "route": route,
            "upstream": f"{service[4:]}.internal:8443",
            "outcome": outcome,
            "status_code": status,
            "error_class": error,
            "attempt": attempt,
            "trace_id": f"{rng.getrandbits(128):032x}",
            "request_id": f"{rng.getrandbits(64):016x}",
            "logical_request_id": f"{rng.getrandbits(64):016x}",
            "bytes_sent": rng.randrange(0, 2_000),
            "bytes_received": rng.randrange(100, 50_000),
            "pool_wait_ms": round(rng.expovariate(2.0), 3),
            "ttfb_ms": round(elapsed * 0.8, 3),
        }
        fields["severity"] = derive_severity(
            outcome=outcome, status_code=status, elapsed_ms=elapsed, attempt=attempt
        )
        events.append(ProbeEvent(**fields))
    return events


def build_workload(n: int, single_n: int, per_record: int, partitions: int) -> Workload:
    """Pack events per partition (as the emitter does) into records of ``per_record``."""
    events = make_events(n)
    encoded = [encode_event(e) for e in events]
    keys = [table_key(e) for e in events]
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(partition_for_key(key, partitions), []).append(i)
    batched: list[Record] = []
    for partition, indexes in sorted(groups.items()):
        for seq, lo in enumerate(range(0, len(indexes), per_record)):
            chunk = indexes[lo : lo + per_record]
            value = encode_batch("bench@localhost:1", seq, time.time(), [encoded[i] for i in chunk])
            batched.append((partition, key_bytes(keys[chunk[0]]), value))
    single = [
        (partition_for_key(keys[i], partitions), key_bytes(keys[i]), encoded[i])
        for i in range(min(single_n, n))
    ]
    size = sum(map(len, encoded)) / n
    return Workload(n, batched, single, size)


# -- Kafka ---------------------------------------------------------------------------------


async def produce(
    bootstrap: str, topic: str, records: list[Record], compression: str | None
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        compression_type=compression,
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    try:
        pending = []
        for partition, key, value in records:
            pending.append(await producer.send(topic, value=value, key=key, partition=partition))
            if len(pending) >= 5_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
