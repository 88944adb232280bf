"""Alert records for API tests: a FIRING record and its follow-ups, as the engine makes them."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec

from tables.alerting import AlertRecord, Observed

T0 = 1_764_000_000.0
_ids = itertools.count(1)


def firing(n: int = 1, **kw: Any) -> AlertRecord:
    """The FIRING record of episode ``n`` (its ``alert_id`` is ``n`` in hex)."""
    at = kw.pop("at", T0)
    fields: dict[str, Any] = {
        "alert_id": f"{n:032x}",
        "status": "firing",
        "rule": "error-rate-fast-burn",
        "kind": "error_rate",
        "severity": "page",
        "service": "checkout",
        "route": "/pay",
        "method": "POST",
        "observed": Observed(value=0.2, by_view={"1m": 0.3, "5m": 0.2}),
        "threshold": 0.144,
        "objective": 0.99,
        "burn_rate": 20.0,
        "views": ("5m", "1m"),
        "started_at": at,
        "fired_at": at,
        "resolved_at": None,
        "evaluated_at": at,
        "example_trace_ids": (f"{n:031x}b",),
        "trace_id": f"{n:031x}b",
        "request_id": f"{next(_ids):016x}",
        "message": f"FIRING [page] episode {n}",
    }
    fields.update(kw)
    return AlertRecord(**fields)


def follow_up(record: AlertRecord, status: str, at: float) -> AlertRecord:
    """A RESOLVED or still_firing record of the same episode, evaluated at ``at``."""
    return msgspec.structs.replace(
        record,
        status=status,
        resolved_at=at if status == "resolved" else None,
        evaluated_at=at,
        request_id=f"{next(_ids):016x}",
        message=f"{status.upper()} {record.message}",
    )
