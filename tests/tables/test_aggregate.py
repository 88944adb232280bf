"""WindowAggregate: counting rules, merge algebra, codec, examples, aggregate_events."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.schema import ProbeEvent, table_key
from tables.aggregate import (
    ERROR_EXAMPLES,
    SLOWEST_EXAMPLES,
    WindowAggregate,
    aggregate_events,
)
from tables.windows import bucket_start, is_late
from tests.tables.factory import T0, make_event, window_events

KEY = "checkout|GET|/users/{id}"


def cell_of(events: list[ProbeEvent], *, key: str = KEY, bucket: int = T0) -> WindowAggregate:
    cell = WindowAggregate(key, bucket)
    for e in events:
        cell.add(e)
    return cell


def exact_part(cell: WindowAggregate) -> dict[str, Any]:
    """Everything but the float sums, which may differ in the last bits with the order."""
    data = cell.to_data()
    data.pop("pool_wait_ms_sum")
    data["latency"].pop("sum")
    return data


def test_counting_rules() -> None:
    events = [
        make_event(elapsed_ms=10.0, status_code=200, pool_wait_ms=2.0),
        make_event(elapsed_ms=20.0, status_code=304, attempt=2),
        make_event(outcome="http_error", status_code=404, error_class="http_4xx"),
        make_event(outcome="http_error", status_code=503, error_class="http_5xx", attempt=3),
        make_event(outcome="timeout", status_code=None, error_class="read_timeout", elapsed_ms=5e3),
        make_event(outcome="cancelled", status_code=None, error_class="cancelled"),
        make_event(outcome="breaker_open", status_code=None, error_class="breaker_open"),
        make_event(status_code=200, bytes_sent=100, bytes_received=7, pool_wait_ms=9.5),
    ]
    cell = cell_of(events)
    cell.add(make_event(status_code=101), late=True)
    assert cell.requests == 9
    assert cell.errors == 5
    assert cell.timeouts == 1
    assert cell.retries == 2
    assert cell.cancelled == 1
    assert cell.breaker_open == 1
    assert cell.late_events == 1
    assert (cell.bytes_sent, cell.bytes_received) == (100, 7)
    assert cell.outcomes == {
        "ok": 4,
        "http_error": 2,
        "timeout": 1,
        "cancelled": 1,
        "breaker_open": 1,
    }
    assert cell.error_classes == {
        "http_4xx": 1,
        "http_5xx": 1,
        "read_timeout": 1,
        "cancelled": 1,
        "breaker_open": 1,
    }
    assert cell.status_classes == {"1xx": 1, "2xx": 2, "3xx": 1, "4xx": 1, "5xx": 1, "none": 3}
    assert (cell.pool_wait_count, cell.pool_wait_ms_sum, cell.pool_wait_ms_max) == (2, 11.5, 9.5)
    assert cell.latency.count == 8  # the breaker_open attempt was never sent
    assert cell.latency.quantile(1.0) == pytest.approx(5e3, rel=0.01)


@given(st.lists(window_events(span_s=9), max_size=40), st.randoms(use_true_random=False))
def test_merge_is_commutative_and_associative(events: list[ProbeEvent], rnd: random.Random) -> None:
    cut1, cut2 = sorted(rnd.randint(0, len(events)) for _ in range(2))
    a, b, c = (cell_of(events[:cut1]), cell_of(events[cut1:cut2]), cell_of(events[cut2:]))
    whole = cell_of(events)

    ab_c = cell_of(events[:cut1])
    ab_c.merge(b)
    ab_c.merge(c)
    c_ba = cell_of(events[cut2:])
    b_a = cell_of(events[cut1:cut2])
    b_a.merge(a)
    c_ba.merge(b_a)
    assert exact_part(ab_c) == exact_part(whole) == exact_part(c_ba)
    assert ab_c.pool_wait_ms_sum == pytest.approx(whole.pool_wait_ms_sum)
    combined = WindowAggregate.combine([c, a, b], key=KEY, bucket=T0)
    assert exact_part(combined) == exact_part(whole)


@given(st.lists(window_events(span_s=9), max_size=40), st.randoms(use_true_random=False))
def test_add_order_does_not_matter(events: list[ProbeEvent], rnd: random.Random) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert exact_part(cell_of(shuffled)) == exact_part(cell_of(events))


@given(st.lists(window_events(span_s=9), max_size=40))
def test_json_round_trip_is_exact(events: list[ProbeEvent]) -> None:
    cell = cell_of(events)
    data = cell.__json__()
    assert data == cell.to_data()
    wire = json.dumps(data)
    restored = WindowAggregate.from_data(json.loads(wire), preferred_type=WindowAggregate)
    assert json.dumps(restored.to_data()) == wire
    assert restored.examples == cell.examples
    # the restored cell goes on counting like the original
    extra = make_event(
        elapsed_ms=99_999.0, outcome="timeout", status_code=None, error_class="read_timeout"
    )
    restored.add(extra)
    cell.add(extra)
    assert restored.to_data() == cell.to_data()


def test_from_data_accepts_an_instance() -> None:
    cell = cell_of([make_event()])
    assert WindowAggregate.from_data(cell) is cell


@pytest.mark.parametrize(
    "change",
    [
        {"v": 99},
        {"outcomes": {"exploded": 1}},
        {"error_classes": {"some_raw_message": 1}},
        {"status_classes": {"6xx": 1}},
        {"requests": -1},
        {"requests": 1.5},
        {"bucket": T0 + 3},
        {"key": 7},
        {"slowest": [[1.0, "a", "b"]] * (SLOWEST_EXAMPLES + 1)},
        {"recent_errors": [[1.0, 1.0, "a", "b"]] * (ERROR_EXAMPLES + 1)},
        {"latency": {"v": 1}},
        {"slowest": [[1.0, "a"]]},
    ],
)
def test_from_data_rejects_malformed_or_unbounded(change: dict[str, Any]) -> None:
    data = cell_of([make_event()]).to_data() | change
    with pytest.raises(ValueError):
        WindowAggregate.from_data(data)


def test_merge_refuses_another_cell() -> None:
    cell = cell_of([make_event()])
    with pytest.raises(ValueError, match="cannot merge"):
        cell.merge(WindowAggregate(KEY, T0 + 10))
    with pytest.raises(ValueError, match="cannot merge"):
        cell.merge(WindowAggregate("other|GET|/", T0))


def test_examples_keep_the_slowest_and_the_latest_failures() -> None:
    ok = [make_event(elapsed_ms=float(ms), started_at=T0 + 1) for ms in range(1, 21)]
    failures = [
        make_event(
            outcome="http_error",
            status_code=500,
            error_class="http_5xx",
            elapsed_ms=0.5,
            started_at=T0 + i / 10,
        )
        for i in range(10)
    ]
    cell = cell_of(ok + failures)
    assert [ms for ms, _, _ in cell.slowest] == [20.0, 19.0, 18.0, 17.0, 16.0]
    assert [ts for ts, _, _, _ in cell.recent_errors] == [T0 + 0.9, T0 + 0.8, T0 + 0.7]
    examples = cell.examples
    assert len(examples) == SLOWEST_EXAMPLES + ERROR_EXAMPLES
    assert [ms for ms, _, _ in examples[:5]] == [20.0, 19.0, 18.0, 17.0, 16.0]
    assert {trace for _, trace, _ in examples[5:]} == {e.trace_id for e in failures[-3:]}


def test_examples_are_deduplicated_across_merges() -> None:
    slow = make_event(
        elapsed_ms=900.0, outcome="http_error", status_code=502, error_class="http_5xx"
    )
    a, b = cell_of([slow]), cell_of([slow])
    a.merge(b)
    assert a.requests == 2
    assert [request_id for _, _, request_id in a.examples] == [slow.request_id]


def test_aggregate_events_groups_by_key_and_bucket() -> None:
    events = [
        make_event(started_at=T0 + 0.0),
        make_event(started_at=T0 + 9.999),
        make_event(started_at=T0 + 10.0),
        make_event(started_at=T0 + 3, route="/other"),
        make_event(started_at=T0 + 3, method="POST"),
        make_event(started_at=T0 + 3, service="search"),
    ]
    cells = aggregate_events(events)
    assert {cell_id: c.requests for cell_id, c in cells.items()} == {
        (KEY, T0): 2,
        (KEY, T0 + 10): 1,
        ("checkout|GET|/other", T0): 1,
        ("checkout|POST|/users/{id}", T0): 1,
        ("search|GET|/users/{id}", T0): 1,
    }
    assert all(c.key == k and c.bucket == b for (k, b), c in cells.items())


@given(st.lists(window_events(span_s=60), max_size=60), st.floats(0, 120, allow_nan=False))
def test_aggregate_events_matches_brute_force(events: list[ProbeEvent], lag: float) -> None:
    watermark = T0 + lag
    cells = aggregate_events(events, watermark=watermark)
    assert sum(c.requests for c in cells.values()) == len(events)
    for (key, bucket), cell in cells.items():
        members = [
            e for e in events if table_key(e) == key and bucket_start(e.started_at) == bucket
        ]
        expected = WindowAggregate(key, bucket)
        for e in members:
            expected.add(e, late=is_late(e.started_at, watermark))
        assert exact_part(cell) == exact_part(expected)


def test_aggregate_events_without_watermark_flags_nothing_late() -> None:
    cells = aggregate_events([make_event(started_at=T0 - 3_000.0)])
    assert [c.late_events for c in cells.values()] == [0]


def test_add_cost_per_event() -> None:
    """A loose guard; bench/quantile_accuracy.py reports the figure (~1-2 us)."""
    import time

    events = [make_event(elapsed_ms=float(i % 500) + 0.25) for i in range(5_000)]
    cell = WindowAggregate(KEY, T0)
    start = time.process_time()
    for e in events:
        cell.add(e)
    assert (time.process_time() - start) / len(events) < 50e-6


def test_faust_value_codec_round_trip() -> None:
    """The table value protocol as Faust's serializer registry drives it."""
    from faust.serializers.registry import Registry

    cell = cell_of(
        [make_event(), make_event(outcome="cancelled", status_code=None, error_class="cancelled")]
    )
    registry = Registry()
    value_type: Any = WindowAggregate  # Faust types value_type as a Model; any from_data works
    payload = registry.dumps_value(value_type, cell, serializer="json")
    restored = registry.loads_value(value_type, payload, serializer="json")
    assert isinstance(restored, WindowAggregate)
    assert restored.to_data() == cell.to_data()


@given(
    st.lists(window_events(span_s=80), max_size=80),
    st.integers(0, 7),
    st.integers(1, 7),
)
def test_slide_equals_a_fresh_combine(events: list[ProbeEvent], start: int, width: int) -> None:
    # one cell per bucket, whatever the event's key (keys do not matter to the algebra)
    cells: dict[int, WindowAggregate] = {}
    for (_, b), c in aggregate_events(events).items():
        if b in cells:
            cells[b].merge(WindowAggregate.from_data(c.to_data() | {"key": KEY}))
        else:
            cells[b] = WindowAggregate.from_data(c.to_data() | {"key": KEY})
    old = [T0 + (start + i) * 10 for i in range(width)]
    new = [b + 10 for b in old]
    base = WindowAggregate.combine([cells[b] for b in old if b in cells], key=KEY, bucket=0)
    members = [cells[b] for b in new if b in cells]
    slid = WindowAggregate.slide(
        base, cells.get(old[0]), cells.get(new[-1]), members, key=KEY, bucket=0
    )
    fresh = WindowAggregate.combine(members, key=KEY, bucket=0)
    assert exact_part(slid) == exact_part(fresh)
    assert slid.pool_wait_ms_sum == pytest.approx(fresh.pool_wait_ms_sum)
    assert slid.latency.sum == pytest.approx(fresh.latency.sum)
