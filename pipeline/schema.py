"""Probe event schema v1: the one wire contract between probes and workers.

A probe event describes one terminal outcome of one outbound HTTP request attempt.
It is a frozen, typed ``msgspec.Struct``: decoding JSON into it *is* validation, and
a failure names the offending field (``Expected `int`, got `str` - at `$.status_code```).
Cross-field rules that a type cannot express are checked by :func:`check_invariants`.

The field list, units and the severity rules are documented in ``docs/event-schema.md``;
a test checks that every field here appears there.

Errors::

    SchemaError (ValueError)
      └── InvalidEvent      one event failed validation; ``reason`` is a short stable code,
                            ``detail`` the human text (field path included)
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

import msgspec

__all__ = [
    "CRITICAL_ELAPSED_MS",
    "ERROR_CLASSES",
    "OUTCOMES",
    "UNSENT_OUTCOMES",
    "SCHEMA_VERSION",
    "SERVICE_RE",
    "SEVERITIES",
    "SLOW_ELAPSED_MS",
    "BreakerState",
    "ErrorClass",
    "InvalidEvent",
    "Method",
    "Outcome",
    "ProbeEvent",
    "SchemaError",
    "Severity",
    "check_invariants",
    "decode_event",
    "derive_severity",
    "encode_event",
    "event_from_dict",
    "table_key",
]

SCHEMA_VERSION: Final = 1

# Severity thresholds of schema v1. Fixed (not settings) so that every worker derives and
# checks severity identically; a change is a schema version bump.
SLOW_ELAPSED_MS: Final = 1_000.0
CRITICAL_ELAPSED_MS: Final = 5_000.0

Outcome = Literal[
    "ok",  # a response arrived (any status < 400) and its body was read or closed
    "http_error",  # a response arrived with status >= 400
    "timeout",  # connect, read, write, pool or total timeout
    "connect_error",  # refused, unreachable, DNS failure, TLS handshake failure
    "protocol_error",  # the peer broke HTTP (or we did)
    "transport_error",  # the connection broke after it was established (read/write error)
    "cancelled",  # the caller cancelled the request (task cancellation, early exit)
    "breaker_open",  # the circuit breaker short-circuited the attempt; nothing was sent
    "budget_exhausted",  # reserved: a retry was wanted but the retry budget refused it
]
OUTCOMES: Final[frozenset[str]] = frozenset(Outcome.__args__)  # type: ignore[attr-defined]
UNSENT_OUTCOMES: Final[frozenset[str]] = frozenset({"breaker_open", "budget_exhausted"})
"""Attempts refused before anything was sent: their ``elapsed_ms`` is not a latency."""

ErrorClass = Literal[
    "connect_timeout",
    "read_timeout",
    "write_timeout",
    "pool_timeout",
    "total_timeout",
    "connection_refused",
    "dns_failure",
    "connect_failed",
    "tls_error",
    "remote_protocol_error",
    "local_protocol_error",
    "read_error",
    "write_error",
    "cancelled",
    "breaker_open",
    "http_4xx",
    "http_5xx",
    "unexpected",
]
ERROR_CLASSES: Final[frozenset[str]] = frozenset(ErrorClass.__args__)  # type: ignore[attr-defined]

Severity = Literal["info", "warning", "error", "critical"]
SEVERITIES: Final[tuple[str, ...]] = ("info", "warning", "error", "critical")
BreakerState = Literal["closed", "open", "half_open"]
# OTHER: any extension method (PROPFIND, ...), folded so the label set stays closed.
Method = Literal[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "OTHER"
]

# Patterns are checked after decoding (see _check_patterns): msgspec calls Python's `re`
# once per constrained field per event (~0.7 us each); lengths stay in the type.
_Hex32 = Annotated[str, msgspec.Meta(min_length=32, max_length=32)]
_Hex16 = Annotated[str, msgspec.Meta(min_length=16, max_length=16)]
_Service = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Route = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_Upstream = Annotated[str, msgspec.Meta(min_length=3, max_length=262)]
_Ip = Annotated[str, msgspec.Meta(min_length=2, max_length=45)]
_Millis = Annotated[float, msgspec.Meta(ge=0.0, le=86_400_000.0)]
_Bytes = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
# Unix epoch seconds; 2000-01-01 .. 2200-01-01 rules out ms-vs-s mix-ups.
_EpochSeconds = Annotated[float, msgspec.Meta(ge=946_684_800.0, le=7_258_118_400.0)]
_Status = Annotated[int, msgspec.Meta(ge=100, le=599)]
_Attempt = Annotated[int, msgspec.Meta(ge=1, le=100)]


class ProbeEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One terminal outcome of one outbound request attempt (schema v1)."""

    schema_version: Literal[1] = 1
    service: _Service
    started_at: _EpochSeconds
    elapsed_ms: _Millis
    method: Method
    route: _Route
    upstream: _Upstream
    outcome: Outcome
    severity: Severity
    trace_id: _Hex32
    request_id: _Hex16
    logical_request_id: _Hex16
    attempt: _Attempt = 1
    status_code: _Status | None = None
    bytes_sent: _Bytes = 0
    bytes_received: _Bytes = 0
    body_complete: bool = True
    error_class: ErrorClass | None = None
    internal_ip: _Ip | None = None
    external_ip: _Ip | None = None
    breaker_state: BreakerState | None = None
    pool_wait_ms: _Millis | None = None
    connect_ms: _Millis | None = None
    tls_ms: _Millis | None = None
    ttfb_ms: _Millis | None = None
    transfer_ms: _Millis | None = None


class SchemaError(ValueError):
    """Root of the schema's errors."""


class InvalidEvent(SchemaError):
    """An event failed validation. ``reason`` is a stable code for counters and dead letters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def derive_severity(
    *,
    outcome: str,
    status_code: int | None,
    elapsed_ms: float,
    attempt: int = 1,
    body_complete: bool = True,
) -> Severity:
    """Severity rules of schema v1 (docs/event-schema.md, "Severity"). First match wins.

    critical: the upstream failed us (5xx, timeout, connect/transport/protocol error,
              breaker open) or the call took >= CRITICAL_ELAPSED_MS.
    error:    the upstream throttled or timed out the request (408, 429), or the retry
              budget refused a retry.
    warning:  other 4xx, a cancelled call, a partly read body, a retry attempt,
              or a call slower than SLOW_ELAPSED_MS.
    info:     everything else.
    """
    if outcome in _CRITICAL_OUTCOMES or (status_code is not None and status_code >= 500):
        return "critical"
    if elapsed_ms >= CRITICAL_ELAPSED_MS:
        return "critical"
    if status_code in (408, 429) or outcome == "budget_exhausted":
        return "error"
    if (
        (status_code is not None and status_code >= 400)
        or outcome == "cancelled"
        or not body_complete
        or attempt > 1
        or elapsed_ms >= SLOW_ELAPSED_MS
    ):
        return "warning"
    return "info"


_CRITICAL_OUTCOMES: Final = frozenset(
    {"timeout", "connect_error", "protocol_error", "transport_error", "breaker_open"}
)


_IDS_RE: Final = re.compile("[0-9a-f]{64}")
_HEX_RE: Final = re.compile("[0-9a-f]+")
SERVICE_RE: Final = re.compile("[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""What a ``service`` name may be (fullmatch): the schema's rule, also the probe config's."""
_FIELD_RES: Final = {
    "service": SERVICE_RE,
    "route": re.compile("/.*", re.S),
    "upstream": re.compile(r"[^\s/@?#]+:\d{1,5}"),
    "internal_ip": re.compile("[0-9a-fA-F.:]+"),
    "external_ip": re.compile("[0-9a-fA-F.:]+"),
}
# (field, value) pairs already matched. These fields repeat across events (few services,
# routes, upstreams, IPs), so most checks become one set lookup. Bounded.
_SEEN: set[tuple[str, str]] = set()
_SEEN_MAX: Final = 65_536


def _check_patterns(event: ProbeEvent) -> None:
    if not _IDS_RE.fullmatch(event.trace_id + event.request_id + event.logical_request_id):
        for name in ("trace_id", "request_id", "logical_request_id"):
            if not _HEX_RE.fullmatch(getattr(event, name)):
                raise InvalidEvent(f"invalid_field:{name}", f"{name} is not lowercase hex")
    seen = _SEEN
    for name, pattern in _FIELD_RES.items():
        value = getattr(event, name)
        if value is None or (name, value) in seen:
            continue
        if not pattern.fullmatch(value):
            raise InvalidEvent(f"invalid_field:{name}", f"{name} does not match {pattern.pattern}")
        if len(seen) < _SEEN_MAX:
            seen.add((name, value))


def check_invariants(event: ProbeEvent) -> None:
    """Cross-field rules a type cannot express. Raises :class:`InvalidEvent`."""
    _check_patterns(event)
    if event.outcome in ("ok", "http_error") and event.status_code is None:
        raise InvalidEvent("missing_status", f"outcome {event.outcome!r} needs a status_code")
    if event.outcome == "ok" and event.status_code is not None and event.status_code >= 400:
        raise InvalidEvent("outcome_mismatch", f"outcome 'ok' with status {event.status_code}")
    if event.outcome == "http_error" and event.status_code is not None and event.status_code < 400:
        raise InvalidEvent(
            "outcome_mismatch", f"outcome 'http_error' with status {event.status_code}"
        )
    if event.outcome not in ("ok", "http_error") and event.error_class is None:
        raise InvalidEvent("missing_error_class", f"outcome {event.outcome!r} needs error_class")
    if event.trace_id == "0" * 32 or event.request_id == "0" * 16:
        raise InvalidEvent("invalid_trace_context", "all-zero trace_id or request_id")
    expected = derive_severity(
        outcome=event.outcome,
        status_code=event.status_code,
        elapsed_ms=event.elapsed_ms,
        attempt=event.attempt,
        body_complete=event.body_complete,
    )
    if event.severity != expected:
        raise InvalidEvent(
            "severity_mismatch", f"severity {event.severity!r}, rules give {expected!r}"
        )


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ProbeEvent)
_PATH_RE = re.compile(r"at `\$\.([A-Za-z_]+)")


def encode_event(event: ProbeEvent) -> bytes:
    """Compact JSON; fields at their default are still written (explicit over implicit)."""
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> ProbeEvent:
    """Decode and fully validate one event. Raises :class:`InvalidEvent` with a reason code."""
    try:
        event = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(_reason_of(str(exc), data), str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidEvent("malformed_json", str(exc)) from exc
    check_invariants(event)
    return event


def event_from_dict(fields: dict[str, Any]) -> ProbeEvent:
    """Validate a plain mapping (e.g. from a JSONL reader). Raises :class:`InvalidEvent`."""
    try:
        event = msgspec.convert(fields, ProbeEvent)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(_reason_of(str(exc), fields), str(exc)) from exc
    check_invariants(event)
    return event


def _reason_of(message: str, data: object) -> str:
    """Map msgspec's message onto a stable reason code (``field:<name>`` when it names one)."""
    if "schema_version" in message:
        return "unsupported_schema_version"
    if message.startswith("Object missing required field"):
        field = message.rsplit("`", 2)[-2] if "`" in message else "?"
        return f"missing_field:{field}"
    if message.startswith("Object contains unknown field"):
        return "unknown_field"
    match = _PATH_RE.search(message)
    if match:
        return f"invalid_field:{match.group(1)}"
    if message.startswith("Expected `object`"):
        return "not_an_object"
    return "invalid_event"


def table_key(event: ProbeEvent) -> str:
    """The aggregation key (service, route, method) as one string, used for partitioning.

    ``|`` cannot appear in a service name or a method; a route may contain it, so it is last.
    """
    return f"{event.service}|{event.method}|{event.route}"
