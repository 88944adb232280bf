"""SummaryView: views against brute force, caching, pagination, expiry, bounds, determinism."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.schema import ProbeEvent, table_key
from tables.aggregate import WindowAggregate, aggregate_events
from tables.query import SummaryView, WindowStats
from tables.sketch import LatencySketch
from tables.windows import BUCKET_S, RETENTION_S, VIEWS, bucket_start, view_end_bucket
from tests.tables.factory import T0, make_event, window_events

KEY = "checkout|GET|/a"


def view_of(events: list[ProbeEvent], **kwargs: int) -> SummaryView:
    view = SummaryView(**kwargs)
    for cell in aggregate_events(events).values():
        assert view.upsert(cell)
    return view


def brute_force(
    events: list[ProbeEvent], keys: set[str], view: str, end: float
) -> dict[str, object] | None:
    """The expected stats of ``keys`` (merged) computed from the raw events."""
    last = view_end_bucket(end)
    first = last + BUCKET_S - VIEWS[view]
    members = [
        e for e in events if table_key(e) in keys and first <= bucket_start(e.started_at) <= last
    ]
    n = len(members)
    sketch = LatencySketch()
    for e in members:
        if e.outcome not in ("breaker_open", "budget_exhausted"):
            sketch.add(e.elapsed_ms)
    whole = WindowAggregate("x|GET|/", last)
    for e in members:
        whole.add(e)
    waits = [e.pool_wait_ms for e in members if e.pool_wait_ms is not None]
    errors = sum(e.outcome != "ok" for e in members)
    status: dict[str, int] = {}
    for e in members:
        k = "none" if e.status_code is None else f"{e.status_code // 100}xx"
        status[k] = status.get(k, 0) + 1
    return {
        "start": first,
        "end": last + BUCKET_S,
        "requests": n,
        "rate_per_s": n / VIEWS[view],
        "errors": errors,
        "error_rate": errors / n if n else 0.0,
        "timeouts": sum(e.outcome == "timeout" for e in members),
        "retries": sum(e.attempt > 1 for e in members),
        "cancelled": sum(e.outcome == "cancelled" for e in members),
        "breaker_open": sum(e.outcome == "breaker_open" for e in members),
        "bytes_sent": sum(e.bytes_sent for e in members),
        "bytes_received": sum(e.bytes_received for e in members),
        "p50_ms": sketch.quantile(0.5),
        "p95_ms": sketch.quantile(0.95),
        "p99_ms": sketch.quantile(0.99),
        "max_pool_wait_ms": max(waits) if waits else None,
        "status_classes": dict(sorted(status.items())),
        "example_trace_ids": tuple(dict.fromkeys(t for _, t, _ in whole.examples)),
    }


def assert_matches(stats: WindowStats | None, expected: dict[str, object] | None) -> None:
    assert stats is not None and expected is not None
    for name, value in expected.items():
        assert getattr(stats, name) == value, name


ends = st.floats(T0 - 20, T0 + 450, allow_nan=False)
views = st.sampled_from(sorted(VIEWS))


@settings(max_examples=60, deadline=None)
@given(st.lists(window_events(span_s=400), min_size=1, max_size=120), views, ends)
def test_stats_match_brute_force(events: list[ProbeEvent], view: str, end: float) -> None:
    summary = view_of(events)
    for key in summary.keys():
        assert_matches(summary.stats(key, view, end=end), brute_force(events, {key}, view, end))
    # the default end is the end of the latest bucket seen
    latest = max(bucket_start(e.started_at) for e in events) + BUCKET_S
    assert summary.stream_time == latest
    key = summary.keys()[0]
    assert summary.stats(key, view) == summary.stats(key, view, end=latest)


@settings(max_examples=40, deadline=None)
@given(st.lists(window_events(span_s=400), min_size=1, max_size=120), views, ends)
def test_rollup_matches_brute_force(events: list[ProbeEvent], view: str, end: float) -> None:
    summary = view_of(events)
    for service in ("checkout", "search"):
        keys = {k for k in summary.keys() if k.startswith(service + "|")}
        rollup = summary.rollup(service, view, end=end)
        if not keys:
            assert rollup is None
            continue
        assert rollup is not None and (rollup.route, rollup.method) == ("*", "*")
        assert_matches(rollup, brute_force(events, keys, view, end))
        for route in ("/a", "/b/{id}"):
            route_keys = {k for k in keys if k.endswith("|" + route)}
            one = summary.rollup(service, view, end=end, route=route)
            if route_keys:
                assert one is not None and one.route == route
                assert_matches(one, brute_force(events, route_keys, view, end))
            else:
                assert one is None
        assert summary.rollup(service, view, end=end, route="*") == rollup


@settings(max_examples=40, deadline=None)
@given(
    st.lists(window_events(span_s=400), min_size=1, max_size=80), st.randoms(use_true_random=False)
)
def test_same_events_in_any_order_give_identical_stats(
    events: list[ProbeEvent], rnd: random.Random
) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    # and in other batches: cells built per batch, merged as the agent does
    cut = rnd.randint(0, len(shuffled))
    batched = SummaryView()
    cells: dict[tuple[str, int], WindowAggregate] = {}
    for batch in (shuffled[:cut], shuffled[cut:]):
        for cell_id, fresh in aggregate_events(batch).items():
            if cell_id in cells:
                cells[cell_id].merge(fresh)
            else:
                cells[cell_id] = fresh
            batched.upsert(WindowAggregate.from_data(cells[cell_id].to_data()))
    one = view_of(events)
    for view in VIEWS:
        for end in (None, T0 + 200.0, T0 + 395.0):
            assert one.query(view=view, end=end, limit=1000) == batched.query(
                view=view, end=end, limit=1000
            )


def test_stats_of_unknown_key_and_empty_view() -> None:
    summary = view_of([make_event(service="checkout", route="/a", started_at=T0 + 5)])
    assert summary.stats("nope|GET|/", "1m") is None
    quiet = summary.stats(KEY, "10s", end=T0 + 100)  # known key, nothing in that view
    assert quiet is not None
    assert (quiet.requests, quiet.rate_per_s, quiet.error_rate, quiet.p50_ms) == (0, 0.0, 0.0, None)
    assert quiet.max_pool_wait_ms is None and quiet.example_trace_ids == ()
    assert SummaryView().stats(KEY, "1m") is None
    assert SummaryView().query() == ([], 0)
    assert SummaryView().rollup("checkout", "1m") is None


def test_unknown_view_is_rejected() -> None:
    summary = view_of([make_event(route="/a")])
    with pytest.raises(ValueError, match="unknown view"):
        summary.stats(KEY, "2h")
    with pytest.raises(ValueError, match="unknown view"):
        summary.query(view="2h")
    with pytest.raises(ValueError):
        summary.query(offset=-1)


def test_malformed_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="service|method|route"):
        SummaryView().upsert(WindowAggregate("no-pipes", T0))


def test_stats_fields_and_rates() -> None:
    events = [
        make_event(route="/a", started_at=T0 + 1, elapsed_ms=10.0, pool_wait_ms=3.0),
        make_event(route="/a", started_at=T0 + 11, elapsed_ms=20.0, attempt=2),
        make_event(
            route="/a",
            started_at=T0 + 21,
            outcome="timeout",
            status_code=None,
            error_class="connect_timeout",
            elapsed_ms=1_000.0,
        ),
    ]
    stats = view_of(events).stats(KEY, "1m")
    assert stats is not None
    assert (stats.service, stats.method, stats.route, stats.view) == ("checkout", "GET", "/a", "1m")
    assert (stats.start, stats.end) == (T0 + 30 - 60, T0 + 30)
    assert stats.requests == 3 and stats.rate_per_s == 3 / 60
    assert (stats.timeouts, stats.timeout_rate, stats.retries) == (1, 1 / 3, 1)
    assert stats.error_classes == {"connect_timeout": 1}
    assert stats.status_classes == {"2xx": 2, "none": 1}
    assert stats.max_pool_wait_ms == 3.0
    # rank floor(0.99 * (3 - 1)) = 1: the "lower" definition answers the second value
    assert stats.p99_ms == pytest.approx(20.0, rel=0.01)
    assert stats.example_trace_ids[0] == events[2].trace_id  # the slowest first


def many_keys(n_keys: int, buckets: int = 3) -> SummaryView:
    events = [
        make_event(service=f"svc{k % 3}", route=f"/r{k:03d}", started_at=T0 + b * BUCKET_S + 1)
        for k in range(n_keys)
        for b in range(buckets)
    ]
    return view_of(events)


def test_query_filters_sorts_and_paginates() -> None:
    summary = many_keys(25)
    page, total = summary.query(view="1m", limit=10)
    assert total == 25 and len(page) == 10
    everything = []
    for offset in range(0, 30, 7):
        chunk, total = summary.query(view="1m", offset=offset, limit=7)
        assert total == 25
        everything.extend(chunk)
    keys = [f"{s.service}|{s.method}|{s.route}" for s in everything]
    assert keys == sorted(keys) == summary.keys()
    assert summary.query(offset=100)[0] == []
    only, total = summary.query(service="svc1", view="1m")
    assert total == len(only) == 8 and {s.service for s in only} == {"svc1"}
    one, total = summary.query(route="/r004")
    assert total == 1 and one[0].route == "/r004"
    assert summary.query(method="POST") == ([], 0)
    assert summary.keys(service="svc0", route="/r003") == ["svc0|GET|/r003"]
    assert all(s.requests == 3 for s in everything)


def test_upserting_the_open_bucket_updates_cached_stats() -> None:
    summary = view_of([make_event(route="/a", started_at=T0 + b * 10 + 1) for b in range(6)])
    before = summary.stats(KEY, "1m")
    assert before is not None and before.requests == 6
    assert summary.stats(KEY, "1m") is before  # cached
    last = T0 + 50
    grown = aggregate_events([make_event(route="/a", started_at=last + 2) for _ in range(2)])
    cell = summary_cell(summary, KEY, last)
    cell.merge(grown[(KEY, last)])
    summary.upsert(cell)
    after = summary.stats(KEY, "1m")
    assert after is not None and after.requests == 8


def test_upserting_an_older_bucket_of_the_view_updates_cached_stats() -> None:
    summary = view_of([make_event(route="/a", started_at=T0 + b * 10 + 1) for b in range(6)])
    assert summary.stats(KEY, "1m").requests == 6  # type: ignore[union-attr]
    late = aggregate_events([make_event(route="/a", started_at=T0 + 12)])[(KEY, T0 + 10)]
    cell = summary_cell(summary, KEY, T0 + 10)
    cell.merge(late)
    summary.upsert(cell)
    assert summary.stats(KEY, "1m").requests == 7  # type: ignore[union-attr]
    assert summary.delete(KEY, T0 + 10)
    assert not summary.delete(KEY, T0 + 10)
    assert summary.stats(KEY, "1m").requests == 5  # type: ignore[union-attr]
    assert summary.rollup("checkout", "1m").requests == 5  # type: ignore[union-attr]


def summary_cell(summary: SummaryView, key: str, bucket: int) -> WindowAggregate:
    """A copy of a stored cell (stored cells are not to be mutated)."""
    stats = summary.keys()
    assert key in stats
    return WindowAggregate.from_data(summary._cells[key][bucket].to_data())


def test_expire_removes_old_cells_and_refuses_them_afterwards() -> None:
    events = [make_event(route="/a", started_at=T0 + b * 10 + 1) for b in range(100)]
    summary = view_of(events)
    assert len(summary) == 100
    stream_time = T0 + 1_000
    removed = summary.expire(stream_time)
    # kept: buckets ending after stream_time - RETENTION_S = T0 + 100
    assert removed == 10 and len(summary) == 90
    assert summary.counters()["expired_cells"] == 10
    old = aggregate_events([make_event(route="/a", started_at=T0 + 5)])[(KEY, T0)]
    assert not summary.upsert(old)
    assert summary.counters()["refused_cells"] == 1
    assert summary.expire(stream_time - 500) == 0  # the horizon never moves back
    assert summary.expire(stream_time + RETENTION_S + 1_000) == 90
    assert len(summary) == 0 and summary.keys() == [] and summary.query() == ([], 0)
    assert summary.stats(KEY, "1m") is None


def test_max_cells_evicts_the_oldest_bucket_and_counts() -> None:
    summary = SummaryView(max_cells=10)
    for b in range(5):
        for r in ("/a", "/b"):
            cell = aggregate_events([make_event(route=r, started_at=T0 + b * 10)])
            assert summary.upsert(next(iter(cell.values())))
    assert len(summary) == 10
    newer = aggregate_events([make_event(route="/c", started_at=T0 + 50)])
    assert summary.upsert(next(iter(newer.values())))
    assert len(summary) == 9  # the whole oldest bucket (2 cells) went
    assert summary.counters()["evicted_cells"] == 2
    assert summary.stats(KEY, "1m", end=T0 + 60).requests == 4  # type: ignore[union-attr]
    # a replacement of an existing cell needs no room
    again = aggregate_events([make_event(route="/c", started_at=T0 + 51)])
    assert summary.upsert(next(iter(again.values())))
    assert summary.counters()["evicted_cells"] == 2


def test_max_cells_refuses_a_cell_not_newer_than_the_oldest_bucket() -> None:
    summary = SummaryView(max_cells=3)
    for r in ("/a", "/b", "/c"):
        summary.upsert(next(iter(aggregate_events([make_event(route=r, started_at=T0)]).values())))
    flood = aggregate_events([make_event(route="/d", started_at=T0 + 1)])
    assert not summary.upsert(next(iter(flood.values())))
    assert len(summary) == 3
    assert summary.counters() == {"evicted_cells": 0, "refused_cells": 1, "expired_cells": 0}


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 200)), max_size=300))
def test_memory_stays_bounded_under_any_key_and_time_mix(cells: list[tuple[int, int]]) -> None:
    summary = SummaryView(max_cells=50)
    for route, bucket in cells:
        summary.upsert(WindowAggregate(f"svc|GET|/r{route}", T0 + bucket * BUCKET_S))
        assert len(summary) <= 50
        summary.stats(f"svc|GET|/r{route}", "5m")
    counters = summary.counters()
    assert len(summary) + counters["evicted_cells"] + counters["refused_cells"] <= len(cells)
    assert summary._cached_entries <= 1_000
    assert all(len(per_key) <= 8 for per_key in summary._cache.values())
    assert len(summary._buckets) <= 50


def test_query_over_a_thousand_keys_pages_and_caches() -> None:
    """1,000 keys x 30 buckets: one page, then the same page from the cache (speed: bench)."""
    summary = SummaryView()
    for k in range(1_000):
        key = f"svc{k % 10}|GET|/r{k:04d}"
        for b in range(30):
            cell = WindowAggregate(key, T0 + b * BUCKET_S)
            for i in range(3):
                cell.latency.add(float(10 + (k + b + i) % 40))
            cell.requests = 3
            summary.upsert(cell)
    page, total = summary.query(view="5m", limit=100)  # cold: builds the view prefixes
    again, _ = summary.query(view="5m", limit=100)  # cached
    assert total == 1_000 and len(page) == 100 and page[0].requests == 90
    assert again == page


@settings(max_examples=40, deadline=None)
@given(
    st.lists(window_events(span_s=400), min_size=1, max_size=120),
    st.lists(window_events(span_s=400), max_size=10),
    views,
)
def test_sliding_views_equal_fresh_views(
    events: list[ProbeEvent], late: list[ProbeEvent], view: str
) -> None:
    """Walking the end bucket by bucket (the prefix slides) gives the stats of a cold view,
    also when late cells land inside the view between two steps."""
    walked = view_of(events)
    cells = aggregate_events(events)
    late_cells = aggregate_events(late)
    for step, end in enumerate(range(T0, T0 + 420, BUCKET_S)):
        for key in walked.keys():
            walked.stats(key, view, end=end)
        if step % 7 == 3 and late_cells:  # a late cell lands in the middle of the view
            cell_id, fresh = late_cells.popitem()
            if cell_id in cells:
                cells[cell_id].merge(fresh)
            else:
                cells[cell_id] = fresh
            walked.upsert(WindowAggregate.from_data(cells[cell_id].to_data()))
        cold = SummaryView()
        for cell in cells.values():
            cold.upsert(WindowAggregate.from_data(cell.to_data()))
        for key in cold.keys():
            assert walked.stats(key, view, end=end) == cold.stats(key, view, end=end)


def test_rollup_of_unknown_service_caches_nothing_and_end_must_be_finite() -> None:
    summary = view_of([make_event(route="/a")])
    for i in range(100):
        assert summary.rollup(f"ghost{i}", "1m") is None
    assert set(summary._rollups) <= {"checkout"}
    with pytest.raises(ValueError, match="finite"):
        summary.stats(KEY, "1m", end=float("inf"))
