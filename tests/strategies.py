"""Hypothesis strategies shared by the suite: valid probe events and their parts."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from pipeline.schema import Method, ProbeEvent, derive_severity

hex32 = st.text("0123456789abcdef", min_size=32, max_size=32).filter(lambda s: s != "0" * 32)
hex16 = st.text("0123456789abcdef", min_size=16, max_size=16).filter(lambda s: s != "0" * 16)
services = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
routes = st.from_regex(r"/[a-z{}0-9_/-]{0,40}", fullmatch=True)
methods: st.SearchStrategy[Method] = st.sampled_from(
    ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]
)
millis = st.floats(min_value=0.0, max_value=60_000.0, allow_nan=False, allow_infinity=False)
epoch = st.floats(min_value=1.7e9, max_value=2.0e9, allow_nan=False, allow_infinity=False)

_failures = {
    "timeout": ["connect_timeout", "read_timeout", "write_timeout", "pool_timeout"],
    "connect_error": ["connection_refused", "dns_failure", "connect_failed", "tls_error"],
    "protocol_error": ["remote_protocol_error", "local_protocol_error"],
    "transport_error": ["read_error", "write_error"],
    "cancelled": ["cancelled"],
    "breaker_open": ["breaker_open"],
}


@st.composite
def outcome_parts(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["ok", "http_error", *sorted(_failures)]))
    if kind == "ok":
        return {"outcome": "ok", "status_code": draw(st.integers(100, 399)), "error_class": None}
    if kind == "http_error":
        status = draw(st.integers(400, 599))
        return {
            "outcome": "http_error",
            "status_code": status,
            "error_class": "http_5xx" if status >= 500 else "http_4xx",
        }
    return {
        "outcome": kind,
        "status_code": None,
        "error_class": draw(st.sampled_from(_failures[kind])),
    }


@st.composite
def probe_events(draw: st.DrawFn, service: str | None = None) -> ProbeEvent:
    parts = draw(outcome_parts())
    elapsed = draw(millis)
    attempt = draw(st.integers(1, 5))
    body_complete = draw(st.booleans())
    severity = derive_severity(
        outcome=parts["outcome"],
        status_code=parts["status_code"],
        elapsed_ms=elapsed,
        attempt=attempt,
        body_complete=body_complete,
    )
    optional_ms = st.none() | millis
    return ProbeEvent(
        service=service or draw(services),
        started_at=draw(epoch),
        elapsed_ms=elapsed,
        method=draw(methods),
        route=draw(routes),
        upstream=draw(st.from_regex(r"[a-z][a-z0-9.-]{0,30}:[1-9][0-9]{0,4}", fullmatch=True)),
        severity=severity,
        trace_id=draw(hex32),
        request_id=draw(hex16),
        logical_request_id=draw(hex16),
        attempt=attempt,
        bytes_sent=draw(st.integers(0, 10**9)),
        bytes_received=draw(st.integers(0, 10**9)),
        body_complete=body_complete,
        internal_ip=draw(st.none() | st.ip_addresses(v=4).map(str)),
        external_ip=draw(st.none() | st.ip_addresses(v=4).map(str)),
        breaker_state=draw(st.none() | st.sampled_from(["closed", "open", "half_open"])),
        pool_wait_ms=draw(optional_ms),
        connect_ms=draw(optional_ms),
        tls_ms=draw(optional_ms),
        ttfb_ms=draw(optional_ms),
        transfer_ms=draw(optional_ms),
        **parts,
    )
