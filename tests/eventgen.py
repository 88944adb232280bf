"""Synthetic probe events with controlled times and latencies, produced like the emitter does."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import msgspec
from aiokafka import AIOKafkaProducer

from pipeline.envelope import encode_batch
from pipeline.partitioning import partition_for_key
from pipeline.probe._record import Record, RecordContext
from pipeline.probe.nat import NatMapping
from pipeline.schema import ProbeEvent, derive_severity, encode_event, table_key

# One fixed, valid event: the emitter tests copy it with new ids.
EMITTER_BASE_EVENT = ProbeEvent(
    service="checkout",
    started_at=1_767_225_600.0,
    elapsed_ms=12.5,
    method="GET",
    route="/api/orders/{id}",
    upstream="orders.internal:443",
    outcome="ok",
    severity="info",
    trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    request_id="00f067aa0ba902b7",
    logical_request_id="00f067aa0ba902b7",
    status_code=200,
)


def emitter_event(i: int, *, routes: int = 50) -> ProbeEvent:
    """The ``i``-th copy of EMITTER_BASE_EVENT: its own request id, start and one of
    ``routes`` routes (so its own table key)."""
    return msgspec.structs.replace(
        EMITTER_BASE_EVENT,
        route=f"/api/r{i % routes}/{{id}}",
        request_id=f"{i + 1:016x}",
        started_at=EMITTER_BASE_EVENT.started_at + i,
    )


# What every emitter_record shares (a NatMapping compiles its rules when made).
_EMITTER_CONTEXT = RecordContext("checkout", NatMapping())


def emitter_record(i: int) -> Record:
    """The ``i``-th probe record, as the transport hands it over (see pipeline.probe._record):
    one of 7 routes, every fifth a 503."""
    return Record(
        _EMITTER_CONTEXT,
        EMITTER_BASE_EVENT.started_at + i,
        10.0,
        10.004,
        10.0125,
        "GET",
        f"/api/r{i % 7}/{{id}}",
        "orders.internal:443",
        None,
        None,
        EMITTER_BASE_EVENT.trace_id,
        f"{i + 1:016x}",
        f"{i + 1:016x}",
        1,
        200 if i % 5 else 503,
        0,
        11,
        True,
        "10.0.0.7",
        "closed",
        0.0,
        None,
        None,
    )


def make_event(
    *,
    service: str = "checkout",
    route: str = "/orders/{id}",
    method: str = "GET",
    started_at: float,
    elapsed_ms: float,
    status_code: int | None = 200,
    outcome: str | None = None,
    error_class: str | None = None,
    rng: random.Random | None = None,
) -> ProbeEvent:
    rng = rng or random.Random()
    if outcome is None:
        outcome = "ok" if status_code is not None and status_code < 400 else "http_error"
        if status_code is not None and status_code >= 400:
            error_class = "http_5xx" if status_code >= 500 else "http_4xx"
    return ProbeEvent(
        service=service,
        started_at=started_at,
        elapsed_ms=elapsed_ms,
        method=method,  # type: ignore[arg-type]
        route=route,
        upstream="upstream.local:8080",
        outcome=outcome,  # type: ignore[arg-type]
        severity=derive_severity(outcome=outcome, status_code=status_code, elapsed_ms=elapsed_ms),
        trace_id=f"{rng.getrandbits(128) | 1:032x}",
        request_id=f"{rng.getrandbits(64) | 1:016x}",
        logical_request_id=f"{rng.getrandbits(64) | 1:016x}",
        status_code=status_code,
        error_class=error_class,  # type: ignore[arg-type]
    )


def route_for_partition(partition: int, partitions: int, *, service: str = "checkout") -> str:
    """A route whose (service, GET, route) key lands on ``partition``."""
    for n in range(100_000):
        route = f"/p{partition}/r{n}"
        if partition_for_key(f"{service}|GET|{route}", partitions) == partition:
            return route
    raise AssertionError("no route found")


async def produce(
    bootstrap: str,
    topic: str,
    events: Iterable[ProbeEvent],
    *,
    partitions: int,
    batch_size: int = 500,
    extra_records: Sequence[tuple[int, bytes]] = (),
) -> int:
    """Pack events per partition into envelopes (as the emitter does) and send them."""
    groups: dict[int, list[bytes]] = {}
    for event in events:
        groups.setdefault(partition_for_key(table_key(event), partitions), []).append(
            encode_event(event)
        )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    sent = 0
    try:
        for partition, raws in sorted(groups.items()):
            for start in range(0, len(raws), batch_size):
                chunk = raws[start : start + batch_size]
                value = encode_batch("tests@local:1", sent, 1_764_000_000.0, chunk)
                await producer.send_and_wait(topic, value, partition=partition)
                sent += 1
        for partition, value in extra_records:
            await producer.send_and_wait(topic, value, partition=partition)
            sent += 1
    finally:
        await producer.stop()
    return sent
