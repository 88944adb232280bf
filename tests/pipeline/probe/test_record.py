"""Probe records: the event built from a record is the event the probe used to build itself.

The transport hands sinks a flat record and the event is built later (in the emitter's
thread, or when ``MemorySink.events`` is read). ``reference_event`` below is the probe's
former in-line construction (``_Attempt.finish``, ``finish_status`` and
``_Core.emit_breaker_open`` before records), kept here as the oracle: every record must
give the same event, field by field, and the same bytes on the wire.
"""

from __future__ import annotations

import gc
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.envelope import encode_batch, encode_batch_of
from pipeline.probe._errors import classify_status
from pipeline.probe._record import (
    Record,
    RecordContext,
    _WireEvent,
    event_values,
    materialize,
    wire,
    wire_event,
)
from pipeline.probe.nat import NatMapping
from pipeline.probe.retry import NOTHING_SENT_ERROR_CLASSES
from pipeline.probe.sink import MemorySink, record_submitter
from pipeline.schema import (
    ERROR_CLASSES,
    OUTCOMES,
    ProbeEvent,
    derive_severity,
    encode_event,
    table_key,
)

_NOTHING_SENT = NOTHING_SENT_ERROR_CLASSES | {"pool_timeout", "tls_error", "breaker_open"}
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
NAT = NatMapping()
CTX = RecordContext("checkout", NAT)


def reference_event(
    *,
    started_at: float,
    t0: float,
    t_headers: float,
    t_end: float,
    method: str,
    route: str,
    upstream: str,
    outcome: str | None,
    error_class: str | None,
    trace_id: str,
    request_id: str,
    logical_id: str,
    attempt: int,
    status_code: int | None,
    declared: int,
    received: int,
    body_complete: bool,
    internal_ip: str | None,
    breaker_state: str | None,
    pool_wait_ms: float | None,
    connect: float | None,
    tls: float | None,
) -> ProbeEvent:
    """The event as the probe built it on the caller's thread before records."""
    method = method.upper()  # _Logical: extension methods are one label
    method = method if method in _METHODS else "OTHER"
    if outcome is None:  # finish_status
        code = status_code or 0
        if 100 <= code <= 599:
            outcome, error_class = classify_status(code)
        else:
            outcome, error_class = "protocol_error", "remote_protocol_error"
    elapsed_s = t_end - t0
    elapsed_ms = elapsed_s * 1000.0
    status = status_code
    if status is not None and not 100 <= status <= 599:
        status = None
    return ProbeEvent(
        service="checkout",
        started_at=started_at,
        elapsed_ms=elapsed_ms,
        method=method,  # type: ignore[arg-type]
        route=route,
        upstream=upstream,
        outcome=outcome,  # type: ignore[arg-type]
        severity=derive_severity(
            outcome=outcome,
            status_code=status,
            elapsed_ms=elapsed_ms,
            attempt=attempt,
            body_complete=body_complete,
        ),
        trace_id=trace_id,
        request_id=request_id,
        logical_request_id=logical_id,
        attempt=attempt,
        status_code=status,
        bytes_sent=0 if error_class in _NOTHING_SENT else declared,
        bytes_received=received,
        body_complete=body_complete,
        error_class=error_class,  # type: ignore[arg-type]
        internal_ip=internal_ip,
        external_ip=NAT.external_ip(internal_ip, upstream),
        breaker_state=breaker_state,  # type: ignore[arg-type]
        pool_wait_ms=pool_wait_ms,
        connect_ms=connect * 1000.0 if connect is not None else None,
        tls_ms=tls * 1000.0 if tls is not None else None,
        ttfb_ms=(t_headers - t0) * 1000.0 if t_headers else None,
        transfer_ms=max(0.0, elapsed_s - (t_headers - t0)) * 1000.0 if t_headers else None,
    )


def record_of(fields: dict[str, Any]) -> Record:
    """The record ``_Attempt.finish`` builds from these values."""
    f = fields
    return Record(
        CTX,
        f["started_at"],
        f["t0"],
        f["t_headers"],
        f["t_end"],
        f["method"],
        f["route"],
        f["upstream"],
        f["outcome"],
        f["error_class"],
        f["trace_id"],
        f["request_id"],
        f["logical_id"],
        f["attempt"],
        f["status_code"],
        f["declared"],
        f["received"],
        f["body_complete"],
        f["internal_ip"],
        f["breaker_state"],
        f["pool_wait_ms"],
        f["connect"],
        f["tls"],
    )


_hex = st.integers(1, 2**64 - 1)
# Elapsed times around the severity thresholds (1 s and 5 s) and well inside them.
_elapsed = st.one_of(
    st.sampled_from([0.0, 0.000_3, 0.999_999, 1.0, 1.000_001, 4.999_999, 5.0, 7.5]),
    st.floats(0.0, 10.0),
)


@st.composite
def fields(draw: st.DrawFn) -> dict[str, Any]:
    t0 = draw(st.floats(1.0, 1e6))
    elapsed = draw(_elapsed)
    got_headers = draw(st.booleans())
    explicit = draw(st.booleans())  # an exception's outcome, else the status decides
    outcome = draw(st.sampled_from(sorted(OUTCOMES))) if explicit else None
    error_class = (
        draw(st.one_of(st.none(), st.sampled_from(sorted(ERROR_CLASSES)))) if explicit else None
    )
    return {
        "started_at": draw(st.floats(1.7e9, 1.8e9)),
        "t0": t0,
        "t_headers": t0 + elapsed * draw(st.floats(0.0, 1.0)) if got_headers else 0.0,
        "t_end": t0 + elapsed,
        "method": draw(st.sampled_from(["GET", "POST", "DELETE", "PROPFIND", "get", "Patch"])),
        "route": draw(st.sampled_from(["/ok", "/users/{id}", "/{overflow}"])),
        "upstream": draw(st.sampled_from(["127.0.0.1:8080", "api.example:443", "[::1]:80"])),
        "outcome": outcome,
        "error_class": error_class,
        "trace_id": f"{draw(st.integers(1, 2**128 - 1)):032x}",
        "request_id": f"{draw(_hex):016x}",
        "logical_id": f"{draw(_hex):016x}",
        "attempt": draw(st.integers(1, 5)),
        "status_code": draw(
            st.one_of(
                st.none(),
                st.sampled_from([0, 99, 100, 200, 302, 399, 400, 404, 408, 429, 499]),
                st.sampled_from([500, 503, 599, 600, 999]),
            )
        ),
        "declared": draw(st.integers(0, 2**20)),
        "received": draw(st.integers(0, 2**20)),
        "body_complete": draw(st.booleans()),
        "internal_ip": draw(
            st.sampled_from([None, "127.0.0.1", "10.1.2.3", "8.8.8.8", "::1", "not-an-ip"])
        ),
        "breaker_state": draw(st.sampled_from([None, "closed", "half_open"])),
        "pool_wait_ms": draw(st.sampled_from([None, 0.0, 1.5])),
        "connect": draw(st.one_of(st.none(), st.floats(0.0, 1.0))),
        "tls": draw(st.one_of(st.none(), st.floats(0.0, 1.0))),
    }


def sample(**overrides: Any) -> dict[str, Any]:
    """One fixed set of record values (a 200 that took 12.5 ms)."""
    values: dict[str, Any] = {
        "started_at": 1_767_225_600.0,
        "t0": 100.0,
        "t_headers": 100.01,
        "t_end": 100.0125,
        "method": "GET",
        "route": "/users/{id}",
        "upstream": "127.0.0.1:8080",
        "outcome": None,
        "error_class": None,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "request_id": "00f067aa0ba902b7",
        "logical_id": "0000000000003039",
        "attempt": 1,
        "status_code": 200,
        "declared": 0,
        "received": 11,
        "body_complete": True,
        "internal_ip": "127.0.0.1",
        "breaker_state": "closed",
        "pool_wait_ms": 0.0,
        "connect": None,
        "tls": None,
    }
    values.update(overrides)
    return values


@settings(max_examples=400, deadline=None)
@given(fields())
def test_a_record_gives_the_event_the_probe_used_to_build(values: dict[str, Any]) -> None:
    record = record_of(values)
    expected = reference_event(**values)
    assert materialize(record) == expected
    assert wire(record) == (table_key(expected), encode_event(expected))
    key, twin = wire_event(record)
    assert key == table_key(expected)
    in_one_call = encode_batch_of("p@h:1", 3, 1.5, [twin, twin])
    assert in_one_call == encode_batch("p@h:1", 3, 1.5, [encode_event(expected)] * 2)


def test_breaker_open_record_gives_the_former_breaker_open_event() -> None:
    """emit_breaker_open: no timing (t0 = t_headers = t_end = 0.0), nothing sent."""
    record = Record(
        CTX,
        1_767_225_600.0,
        0.0,
        0.0,
        0.0,
        "POST",
        "/pay",
        "api.example:443",
        "breaker_open",
        "breaker_open",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        f"{7:016x}",
        2,
        None,
        512,
        0,
        True,
        None,
        "open",
        None,
        None,
        None,
    )
    former = ProbeEvent(
        service="checkout",
        started_at=1_767_225_600.0,
        elapsed_ms=0.0,
        method="POST",
        route="/pay",
        upstream="api.example:443",
        outcome="breaker_open",
        severity="critical",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        request_id="00f067aa0ba902b7",
        logical_request_id=f"{7:016x}",
        attempt=2,
        error_class="breaker_open",
        breaker_state="open",
    )
    assert materialize(record) == former
    assert wire(record)[1] == encode_event(former)


def test_wire_struct_matches_the_schema() -> None:
    assert _WireEvent.__struct_fields__ == ProbeEvent.__struct_fields__
    values = event_values(record_of(sample()))
    assert msgspec.json.encode(_WireEvent(*values)) == encode_event(
        ProbeEvent(**dict(zip(ProbeEvent.__struct_fields__, values, strict=True)))
    )


def test_a_waiting_record_costs_the_cyclic_collector_nothing() -> None:
    """Records wait in queues: the collector never tracks them, nor counts them towards
    its next collection (allocations of tracked objects do)."""
    record = record_of(sample())
    assert not gc.is_tracked(record)
    assert not gc.is_tracked(CTX)
    values = sample()
    gc.disable()
    try:
        gc.collect()
        before = gc.get_count()[0]
        records = [record_of(values) for _ in range(1000)]
        assert gc.get_count()[0] - before < 10  # a tuple each would count 1,000
    finally:
        gc.enable()
    assert len(records) == 1000


# -- which sinks get records ------------------------------------------------------------


class _EventsOnly:
    def submit(self, event: ProbeEvent) -> None:
        pass


class _OverridesSubmit(MemorySink):
    def submit(self, event: ProbeEvent) -> None:
        super().submit(event)


class _OverridesBoth(MemorySink):
    def submit(self, event: ProbeEvent) -> None:
        super().submit(event)

    def submit_record(self, record: Record) -> None:
        super().submit_record(record)


class _InheritsBoth(MemorySink):
    pass


def test_record_submitter_respects_an_overridden_submit() -> None:
    assert record_submitter(MemorySink()) is not None
    assert record_submitter(_InheritsBoth()) is not None
    assert record_submitter(_OverridesBoth()) is not None
    # A subclass that overrides submit alone wants every event through it.
    assert record_submitter(_OverridesSubmit()) is None
    assert record_submitter(_EventsOnly()) is None


def test_memory_sink_keeps_arrival_order_and_builds_events_once() -> None:
    sink = MemorySink()
    a, b = sample(), sample(status_code=503, attempt=2, request_id="00f067aa0ba902b8")
    sink.submit_record(record_of(a))
    event = reference_event(**b)
    sink.submit(event)
    first = sink.events
    assert first == [reference_event(**a), event]
    assert sink.events[0] is first[0]  # built once, then kept
    sink.clear()
    assert sink.events == []
