"""The probe's compact form of a terminal attempt, and how it becomes a :class:`ProbeEvent`.

The caller's thread only records what it measured: a flat :class:`Record` of raw
timings, ids and labels, built in one step when the attempt ends. Everything derived from
those (elapsed and phase milliseconds, the outcome of a status code, severity, bytes sent,
the simulated NAT address) is computed later, by whoever consumes the record: the Kafka
emitter's background thread (:func:`wire_event`: a positional twin of the event, encoded
inside its record's envelope), or
:class:`~pipeline.probe.sink.MemorySink` when its events are read, or the transport itself
for a sink that only takes events (:func:`materialize`). The event is the same whichever
path builds it; the tests check that field by field and byte for byte.

A record holds no URL, no header and no request object: only the normalized route, the
``host:port`` upstream and ids, like the event it becomes.
"""

from __future__ import annotations

from typing import Any, Final, get_args

import msgspec

from pipeline.probe._errors import classify_status
from pipeline.probe.retry import NOTHING_SENT_ERROR_CLASSES
from pipeline.schema import SLOW_ELAPSED_MS, Method, ProbeEvent, derive_severity

__all__ = ["Record", "RecordContext", "event_values", "materialize", "wire", "wire_event"]


class RecordContext(msgspec.Struct, frozen=True, gc=False):
    """What a record shares with every other record of its transport.

    ``gc=False``: the cyclic collector never tracks it (it references no container that
    could lead back to it); nor a :class:`Record`, which holds it and plain values.
    """

    service: str
    nat: Any  # NatMapping


class Record(msgspec.Struct, gc=False):
    """One ended attempt as the caller's thread measured it, built positionally.

    ``t0``, ``t_headers`` (0.0: no response) and ``t_end`` are ``perf_counter`` values.
    ``method`` is the request's (the event's label, ``OTHER`` for an extension method, is
    made here). ``outcome`` None means "from ``status_code``" (a response that arrived).
    ``status_code`` is as received (out-of-range values become ``protocol_error`` and no
    status). ``logical_id`` is 16 hex characters, as the event has it. ``declared_bytes`` is
    the request body length; bytes sent is 0 for an error class that sent nothing.
    ``connect_s``/``tls_s`` are seconds.

    A struct with ``gc=False``, not a tuple: a tuple is tracked by the cyclic collector from
    its creation to the collector's first look at it, and counts towards the next
    collection; a record is made on every request and waits in a queue up to a flush
    interval. It holds no container that could lead back to it.
    """

    ctx: RecordContext
    started_at: float
    t0: float
    t_headers: float
    t_end: float
    method: str
    route: str
    upstream: str
    outcome: Any  # Outcome | None
    error_class: Any  # ErrorClass | None
    trace_id: str
    request_id: str
    logical_id: str
    attempt: int
    status_code: int | None
    declared_bytes: int
    bytes_received: int
    body_complete: bool
    internal_ip: str | None
    breaker_state: str | None
    pool_wait_ms: float | None
    connect_s: float | None
    tls_s: float | None


_astuple = msgspec.structs.astuple

_METHODS: Final = tuple(method for method in get_args(Method) if method != "OTHER")
_METHOD_LABELS: Final = {method: method for method in _METHODS}


def _method_label(method: str) -> str:
    """Extension methods (PROPFIND, ...) are an open set: one bounded label for them all."""
    method = method.upper()
    return method if method in _METHOD_LABELS else "OTHER"


# Nothing left the process for these: bytes_sent is 0 whatever the declared length.
_NOTHING_SENT: Final = NOTHING_SENT_ERROR_CLASSES | {"pool_timeout", "tls_error", "breaker_open"}


def event_values(record: Record) -> tuple[Any, ...]:
    """The event's field values, in :class:`ProbeEvent`'s field order, from ``record``."""
    return _astuple(wire_event(record)[1])


_FIELDS: Final = ProbeEvent.__struct_fields__


def materialize(record: Record) -> ProbeEvent:
    """The :class:`ProbeEvent` of ``record``."""
    return ProbeEvent(**dict(zip(_FIELDS, event_values(record), strict=True)))


class _WireEvent(msgspec.Struct, frozen=True, gc=False):
    """ProbeEvent's fields in ProbeEvent's order, positional: encodes to the same JSON.

    Building a ProbeEvent takes ~1 us of keyword handling; this takes ~0.1 us. The emitter's
    thread encodes records through it; a test checks the bytes against ``encode_event``.
    """

    schema_version: int
    service: str
    started_at: float
    elapsed_ms: float
    method: str
    route: str
    upstream: str
    outcome: str
    severity: str
    trace_id: str
    request_id: str
    logical_request_id: str
    attempt: int
    status_code: int | None
    bytes_sent: int
    bytes_received: int
    body_complete: bool
    error_class: str | None
    internal_ip: str | None
    external_ip: str | None
    breaker_state: str | None
    pool_wait_ms: float | None
    connect_ms: float | None
    tls_ms: float | None
    ttfb_ms: float | None
    transfer_ms: float | None


assert _WireEvent.__struct_fields__ == ProbeEvent.__struct_fields__, "keep in step with schema"

_encode = msgspec.json.Encoder().encode


def wire_event(record: Record) -> tuple[str, _WireEvent]:
    """``(table_key(event), twin)`` of ``record``'s event, without building it: the twin
    encodes to ``encode_event(event)``, alone or inside an envelope (``encode_batch_of``).

    The emitter's thread runs this once per event: it is written for speed (the common case
    of derive_severity inlined, the twin built in one positional call).
    """
    (
        ctx,
        started_at,
        t0,
        t_headers,
        t_end,
        method,
        route,
        upstream,
        outcome,
        error_class,
        trace_id,
        request_id,
        logical_id,
        attempt,
        status,
        declared,
        received,
        body_complete,
        internal_ip,
        breaker_state,
        pool_wait_ms,
        connect_s,
        tls_s,
    ) = _astuple(record)
    if status is None:
        if outcome is None:
            outcome, error_class = "protocol_error", "remote_protocol_error"
    elif not 100 <= status <= 599:
        status = None
        if outcome is None:
            outcome, error_class = "protocol_error", "remote_protocol_error"
    elif outcome is None:
        outcome, error_class = classify_status(status)
    elapsed_s = t_end - t0
    elapsed_ms = elapsed_s * 1000.0
    if (
        outcome == "ok"
        and attempt <= 1
        and body_complete
        and elapsed_ms < SLOW_ELAPSED_MS
        and (status is None or status < 400)
    ):
        severity = "info"  # what derive_severity gives here, without its keyword call
    else:
        severity = derive_severity(
            outcome=outcome,
            status_code=status,
            elapsed_ms=elapsed_ms,
            attempt=attempt,
            body_complete=body_complete,
        )
    label = _METHOD_LABELS.get(method)
    if label is None:
        label = _method_label(method)
    service = ctx.service
    if t_headers:
        ttfb_s = t_headers - t0
        transfer_s = elapsed_s - ttfb_s
        ttfb_ms = ttfb_s * 1000.0
        transfer_ms = transfer_s * 1000.0 if transfer_s > 0.0 else 0.0
    else:
        ttfb_ms = transfer_ms = None
    return f"{service}|{label}|{route}", _WireEvent(
        1,
        service,
        started_at,
        elapsed_ms,
        label,
        route,
        upstream,
        outcome,
        severity,
        trace_id,
        request_id,
        logical_id,
        attempt,
        status,
        0 if error_class in _NOTHING_SENT else declared,
        received,
        body_complete,
        error_class,
        internal_ip,
        ctx.nat.external_ip(internal_ip, upstream),
        breaker_state,
        pool_wait_ms,
        connect_s * 1000.0 if connect_s is not None else None,
        tls_s * 1000.0 if tls_s is not None else None,
        ttfb_ms,
        transfer_ms,
    )


def wire(record: Record) -> tuple[str, bytes]:
    """``(table_key(event), encode_event(event))`` of ``record``'s event, without building it."""
    key, twin = wire_event(record)
    return key, _encode(twin)
