"""Window arithmetic with explicit timestamps: buckets, views, lateness, expiry, watermarks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tables.windows import (
    BUCKET_S,
    RETENTION_S,
    VIEWS,
    Watermark,
    bucket_start,
    buckets_for_view,
    is_expired,
    is_late,
    view_end_bucket,
)

epoch = st.floats(946_684_800.0, 7_258_118_400.0, allow_nan=False)
widths = st.sampled_from([1, 5, 10, 60, 300])


@given(epoch, widths)
def test_bucket_holds_its_instant_and_is_idempotent(ts: float, width: int) -> None:
    start = bucket_start(ts, width)
    assert isinstance(start, int)
    assert start % width == 0
    assert start <= ts < start + width
    assert bucket_start(start, width) == start
    assert bucket_start(float(start), width) == start


@pytest.mark.parametrize(
    ("ts", "start"),
    [(1000.0, 1000), (1009.999, 1000), (1010.0, 1010), (999.9999999, 990), (1005, 1000)],
)
def test_bucket_boundaries(ts: float, start: int) -> None:
    assert bucket_start(ts) == start


@given(
    st.integers(100_000_000, 700_000_000).map(lambda n: n * BUCKET_S),
    st.sampled_from(sorted(VIEWS)),
)
def test_views_cover_exactly_their_buckets(end_bucket: int, view: str) -> None:
    buckets = buckets_for_view(end_bucket, view)
    assert len(buckets) == VIEWS[view] // BUCKET_S
    assert buckets[-1] == end_bucket
    assert list(buckets) == sorted(set(buckets))
    assert all(b2 - b1 == BUCKET_S for b1, b2 in zip(buckets, buckets[1:], strict=False))
    assert end_bucket + BUCKET_S - buckets[0] == VIEWS[view]  # covers exactly the view width


def test_view_sizes() -> None:
    assert [len(buckets_for_view(1000, v)) for v in ("10s", "1m", "5m")] == [1, 6, 30]
    assert list(buckets_for_view(1000, "1m")) == [950, 960, 970, 980, 990, 1000]


@pytest.mark.parametrize(("end", "view"), [(1000, "2m"), (1005, "1m")])
def test_buckets_for_view_rejects_bad_input(end: int, view: str) -> None:
    with pytest.raises(ValueError):
        buckets_for_view(end, view)


@given(epoch)
def test_view_end_bucket_is_the_bucket_just_before_end(end: float) -> None:
    last = view_end_bucket(end)
    assert last < end <= last + BUCKET_S


def test_view_end_bucket_examples() -> None:
    assert view_end_bucket(1000) == 990
    assert view_end_bucket(1000.0) == 990
    assert view_end_bucket(1000.5) == 1000
    assert view_end_bucket(1009.99) == 1000


def test_is_late_counts_from_the_open_bucket() -> None:
    watermark = 1_005.0  # open bucket: 1000
    assert not is_late(1_000.0, watermark)
    assert not is_late(990.0, watermark)  # exactly one grace period before the open bucket
    assert is_late(989.999, watermark)
    assert not is_late(2_000.0, watermark)  # ahead of the watermark is never late
    assert is_late(969.0, watermark, grace_s=30)
    assert not is_late(970.0, watermark, grace_s=30)


@given(epoch, epoch)
def test_is_late_is_monotonic_in_event_time(a: float, b: float) -> None:
    watermark = max(a, b) + 50
    older, newer = sorted((a, b))
    assert is_late(newer, watermark) <= is_late(older, watermark)


def test_is_expired_when_the_whole_bucket_left_retention() -> None:
    stream_time = 10_000.0
    horizon = stream_time - RETENTION_S  # 9100
    assert is_expired(9_080, stream_time)  # ends 9090 <= 9100
    assert is_expired(9_090, stream_time)  # ends exactly at the horizon
    assert not is_expired(9_100, stream_time)
    assert not is_expired(int(horizon) - 5, stream_time)
    assert is_expired(100, 1_000.0, retention_s=60) is True


@given(st.integers(0, 10**9).map(lambda n: n * BUCKET_S), epoch)
def test_a_view_within_retention_is_never_expired(end_bucket: int, stream_time: float) -> None:
    if end_bucket + BUCKET_S > stream_time:  # the view ends at or after the stream time
        for bucket in buckets_for_view(end_bucket, "5m"):
            assert not is_expired(bucket, stream_time)


def test_watermark_is_monotonic_per_partition() -> None:
    wm = Watermark()
    assert wm.stream_time() is None and wm.max_time() is None
    assert wm.observe(0, 100.0) == 100.0
    assert wm.observe(0, 90.0) == 100.0  # an older event never moves it back
    assert wm.observe(0, 120.0) == 120.0
    assert wm.partition_time(0) == 120.0
    assert wm.partition_time(1) is None


def test_stream_time_is_the_min_over_active_partitions() -> None:
    wm = Watermark(idle_s=300)
    wm.observe(0, 1_000.0)
    wm.observe(1, 900.0)  # slow but active: holds expiry back
    assert wm.stream_time() == 900.0
    wm.observe(0, 1_200.0)
    assert wm.stream_time() == 900.0  # 300 s behind: still active
    wm.observe(0, 1_250.0)
    assert wm.stream_time() == 1_250.0  # 350 s behind > idle_s: left out
    assert wm.max_time() == 1_250.0


def test_idle_partition_stops_holding_expiry_back() -> None:
    wm = Watermark(idle_s=300)
    wm.observe("a", 1_000.0)
    wm.observe("b", 800.0)
    assert wm.stream_time() == 800.0
    wm.observe("a", 1_101.0)  # b is now 301 s behind: idle
    assert wm.stream_time() == 1_101.0
    wm.observe("b", 1_050.0)  # b catches up: active again
    assert wm.stream_time() == 1_050.0


def test_forget_drops_a_revoked_partition() -> None:
    wm = Watermark()
    wm.observe(0, 1_000.0)
    wm.observe(1, 950.0)
    wm.forget(1)
    wm.forget(7)  # unknown: no error
    assert wm.stream_time() == 1_000.0
    assert len(wm) == 1


@given(st.lists(st.tuples(st.integers(0, 3), epoch), min_size=1, max_size=50))
def test_stream_time_bounds(observations: list[tuple[int, float]]) -> None:
    wm = Watermark()
    for partition, ts in observations:
        wm.observe(partition, ts)
    top = wm.max_time()
    stream_time = wm.stream_time()
    assert top is not None and stream_time is not None
    assert top - RETENTION_S <= stream_time <= top
    assert stream_time in {wm.partition_time(p) for p, _ in observations}
