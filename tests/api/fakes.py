"""A fake :class:`api.backend.Backend` on a real ``SummaryView`` filled with real cells."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from pipeline.schema import ProbeEvent
from tables.aggregate import aggregate_events
from tables.query import SummaryView
from tests.tables.factory import T0, make_event

RESILIENCE: dict[str, Any] = {
    "upstreams": [
        {
            "service": "search",
            "upstream": "index.local:9200",
            "breaker_state": "half_open",
            "failure_rate": 0.5,
            "slow_call_rate": 0.0,
            "calls": 2,
            "last_transitions": [
                {"from": "closed", "to": "open", "at": float(T0) + 10.0},
                {"from": "open", "to": "half_open", "at": float(T0) + 15.0},
            ],
            "stuck_half_open": True,
            "retries": 4,
            "retry_rate": 0.2,
            "timeouts": 3,
            "timeout_rate": 0.15,
            "breaker_open_rejections": 12,
        },
        {
            "service": "checkout",
            "upstream": "payments.local:443",
            "breaker_state": "closed",
            "failure_rate": 0.0,
            "slow_call_rate": 0.0,
            "calls": 20,
            "last_transitions": [],
            "stuck_half_open": False,
            "retries": 0,
            "retry_rate": 0.0,
            "timeouts": 0,
            "timeout_rate": 0.0,
            "breaker_open_rejections": 0,
        },
    ],
    "pipeline": {"sink": None, "emitter": None},
}


def sample_events() -> list[ProbeEvent]:
    """3 keys over 60 s from T0: checkout GET /users/{id}, checkout POST /orders, search GET /q.

    checkout GET /users/{id}: 60 events, latencies 1..60 ms, 6 of them 503.
    """
    events = []
    for i in range(60):
        status = 503 if i % 10 == 0 else 200
        events.append(
            make_event(
                started_at=T0 + i + 0.5,
                elapsed_ms=float(i + 1),
                status_code=status,
                outcome="ok" if status == 200 else "http_error",
                error_class=None if status == 200 else "http_5xx",
            )
        )
    for i in range(10):
        events.append(
            make_event(method="POST", route="/orders", started_at=T0 + 30 + i, elapsed_ms=100.0)
        )
        events.append(
            make_event(service="search", route="/q", started_at=T0 + 50 + i * 0.5, elapsed_ms=5.0)
        )
    return events


def filled_view(events: list[ProbeEvent] | None = None) -> SummaryView:
    view = SummaryView()
    for cell in aggregate_events(sample_events() if events is None else events).values():
        assert view.upsert(cell)
    return view


def many_keys_view(keys: int, *, services: int = 10) -> SummaryView:
    """``keys`` keys (``svcNN|GET|/r/NNNN``), one event each in the same bucket."""
    events = [
        make_event(
            service=f"svc{k % services:02d}",
            route=f"/r/{k:05d}",
            started_at=T0 + 1.0,
            elapsed_ms=float(k % 97 + 1),
        )
        for k in range(keys)
    ]
    return filled_view(events)


@dataclass
class FakeBackend:
    """Implements ``api.backend.Backend``; tests flip ``reasons`` or swap ``resilience``."""

    view: SummaryView = field(default_factory=filled_view)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    reasons: list[str] = field(default_factory=list)
    resilience: dict[str, Any] = field(default_factory=lambda: RESILIENCE)
    stats: dict[str, int] = field(default_factory=lambda: {"records": 7, "dead_letters": 1})

    def __post_init__(self) -> None:
        Counter(
            "egresswatch_fake_total", "A counter of the fake backend", registry=self.registry
        ).inc(3)

    def readiness(self) -> list[str]:
        return list(self.reasons)

    def pipeline_stats(self) -> dict[str, Any]:
        return dict(self.stats)

    def resilience_state(self, service: str | None = None) -> dict[str, Any]:
        upstreams = [
            u
            for u in self.resilience.get("upstreams", ())
            if service is None or u.get("service") == service
        ]
        upstreams.sort(key=lambda u: (str(u.get("service", "")), str(u.get("upstream", ""))))
        return {**self.resilience, "upstreams": upstreams}
