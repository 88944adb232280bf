"""Upstream health: breaker observations from events, merged across cells and workers."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from pipeline.schema import derive_severity
from tables.aggregate import WindowAggregate, aggregate_events
from tables.query import SummaryView
from tables.resilience import resilience_state
from tables.upstreams import MAX_TRANSITIONS, UpstreamHealth
from tests.eventgen import make_event

BASE = 1_764_000_000.0


def _event(
    t: float,
    state: str | None,
    *,
    status: int | None = 200,
    outcome: str | None = None,
    upstream: str = "pay.local:443",
    route: str = "/pay",
    elapsed: float = 10.0,
):
    event = make_event(
        route=route,
        started_at=t,
        elapsed_ms=elapsed,
        status_code=status,
        outcome=outcome,
        error_class="breaker_open" if outcome else None,
    )
    from msgspec import structs

    return structs.replace(
        event,
        breaker_state=state,
        upstream=upstream,
        severity=derive_severity(
            outcome=event.outcome, status_code=event.status_code, elapsed_ms=elapsed
        ),
    )


def test_transitions_rates_and_state() -> None:
    h = UpstreamHealth()
    h.add(_event(BASE, "closed"))
    h.add(_event(BASE + 1, "closed", status=503))
    h.add(_event(BASE + 2, "open", status=None, outcome="breaker_open"))
    h.add(_event(BASE + 8, "half_open", elapsed=1500.0))
    snap = h.snapshot(now=BASE + 9, stuck_after_s=30)
    assert snap["breaker_state"] == "half_open"
    assert snap["calls"] == 3 and snap["breaker_open_rejections"] == 1
    assert snap["failure_rate"] == 1 / 3 and snap["slow_call_rate"] == 1 / 3
    assert [(t["from"], t["to"]) for t in snap["last_transitions"]] == [
        ("open", "half_open"),
        ("closed", "open"),
    ]
    assert not snap["stuck_half_open"]
    assert h.snapshot(now=BASE + 40, stuck_after_s=30)["stuck_half_open"]


@given(
    st.lists(st.sampled_from(["closed", "open", "half_open"]), min_size=1, max_size=40),
    st.integers(1, 6),
    st.randoms(),
)
def test_merging_cells_equals_one_pass(states: list[str], pieces: int, rnd: random.Random) -> None:
    events = [_event(BASE + i, s) for i, s in enumerate(states)]
    whole = UpstreamHealth()
    for e in events:
        whole.add(e)
    cuts = (
        sorted(rnd.sample(range(1, len(events)), min(pieces, len(events)) - 1))
        if len(events) > 1
        else []
    )
    parts = []
    for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True):
        p = UpstreamHealth()
        for e in events[a:b]:
            p.add(e)
        parts.append(p)
    rnd.shuffle(parts)
    merged = UpstreamHealth.merge_all(parts)
    assert merged.last_state == whole.last_state
    assert merged.calls == whole.calls
    assert merged.transitions == whole.transitions[-MAX_TRANSITIONS:]
    assert merged.half_open_since == whole.half_open_since


def test_cells_carry_upstreams_through_the_codec_and_the_view() -> None:
    events = [
        _event(BASE + i, "closed" if i < 30 else "open", status=503 if i >= 25 else 200)
        for i in range(40)
    ]
    cells = aggregate_events(events)
    view = SummaryView()
    for cell in cells.values():
        view.upsert(WindowAggregate.from_data(cell.to_data()))
    [entry] = resilience_state(view)
    assert entry["service"] == "checkout" and entry["upstream"] == "pay.local:443"
    assert entry["breaker_state"] == "open"
    assert entry["calls"] == 40
    assert entry["failure_rate"] == 15 / 40
    assert entry["last_transitions"][0]["from"] == "closed"
