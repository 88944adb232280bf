"""Valid probe events with explicit times and keys, for the tables tests."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import strategies as st

from pipeline.schema import Method, ProbeEvent, derive_severity
from tests.strategies import outcome_parts

T0 = 1_764_000_000  # a bucket boundary (multiple of 300, so of every view width)
_ids = itertools.count(1)


def make_event(
    *,
    service: str = "checkout",
    method: Method = "GET",
    route: str = "/users/{id}",
    started_at: float = T0 + 1.5,
    elapsed_ms: float = 12.5,
    outcome: str = "ok",
    status_code: int | None = 200,
    error_class: str | None = None,
    attempt: int = 1,
    **extra: Any,
) -> ProbeEvent:
    """One valid event; ids are unique per call unless given."""
    n = next(_ids)
    fields: dict[str, Any] = {
        "service": service,
        "started_at": started_at,
        "elapsed_ms": elapsed_ms,
        "method": method,
        "route": route,
        "upstream": "api.local:8080",
        "outcome": outcome,
        "status_code": status_code,
        "error_class": error_class,
        "attempt": attempt,
        "trace_id": f"{n:032x}",
        "request_id": f"{n:016x}",
        "logical_request_id": f"{n:016x}",
    }
    fields.update(extra)
    fields["severity"] = derive_severity(
        outcome=fields["outcome"],
        status_code=fields["status_code"],
        elapsed_ms=fields["elapsed_ms"],
        attempt=fields["attempt"],
        body_complete=fields.get("body_complete", True),
    )
    return ProbeEvent(**fields)


@st.composite
def window_events(draw: st.DrawFn, *, span_s: int = 400) -> ProbeEvent:
    """Events over few keys (2 services x 2 routes x 2 methods) within ``span_s`` of T0."""
    parts = draw(outcome_parts())
    ids = draw(st.integers(1, 2**63))
    return make_event(
        service=draw(st.sampled_from(["checkout", "search"])),
        method=draw(st.sampled_from(["GET", "POST"])),
        route=draw(st.sampled_from(["/a", "/b/{id}"])),
        started_at=T0 + draw(st.floats(0, span_s, exclude_max=True, allow_nan=False)),
        elapsed_ms=draw(
            st.one_of(
                st.just(0.0),
                st.floats(0.001, 60_000.0, allow_nan=False),
                st.sampled_from([1.0, 10.0, 100.0]),
            )
        ),
        attempt=draw(st.integers(1, 3)),
        pool_wait_ms=draw(st.none() | st.floats(0.0, 500.0, allow_nan=False)),
        bytes_sent=draw(st.integers(0, 10_000)),
        bytes_received=draw(st.integers(0, 10_000)),
        trace_id=f"{ids:032x}",
        request_id=f"{ids:016x}",
        **parts,
    )
