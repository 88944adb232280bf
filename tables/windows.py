"""Window arithmetic: pure functions of event time (Unix epoch seconds), no clock anywhere.

Events are counted in **tumbling buckets** of ``BUCKET_S`` seconds, keyed by the bucket's
start (an ``int``, a multiple of ``BUCKET_S``): bucket ``b`` holds the events with
``b <= started_at < b + BUCKET_S``. A **view** (``"10s"``, ``"1m"``, ``"5m"``) is the merge of
the last ``width / BUCKET_S`` buckets ending at one bucket, inclusive: sliding by one bucket.

Time only moves with the data. A :class:`Watermark` keeps the largest event time seen per
partition; an event is **late** when it is older than the open bucket of its partition by
more than a grace period (it is still counted, in its own bucket, and flagged); a bucket is
**expired** once it ends more than ``RETENTION_S`` before the stream time.
See docs/windows.md.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final

__all__ = [
    "BUCKET_S",
    "RETENTION_S",
    "VIEWS",
    "Watermark",
    "bucket_start",
    "buckets_for_view",
    "is_expired",
    "is_late",
    "view_end_bucket",
]

BUCKET_S: Final = 10
VIEWS: Final[dict[str, int]] = {"10s": 10, "1m": 60, "5m": 300}
RETENTION_S: Final = 900


def bucket_start(ts: float, width_s: int = BUCKET_S) -> int:
    """Start of the tumbling bucket holding instant ``ts``: ``start <= ts < start + width``."""
    return int(ts // width_s) * width_s


def buckets_for_view(end_bucket: int, view: str) -> range:
    """The bucket starts that ``view`` covers, oldest first, ending at ``end_bucket`` inclusive.

    Raises ``ValueError`` for an unknown view or an ``end_bucket`` not on a bucket boundary.
    """
    try:
        width = VIEWS[view]
    except KeyError:
        raise ValueError(f"unknown view {view!r}; expected one of {sorted(VIEWS)}") from None
    if end_bucket % BUCKET_S:
        raise ValueError(f"end_bucket {end_bucket} is not a multiple of {BUCKET_S}")
    first = end_bucket - width + BUCKET_S
    return range(first, end_bucket + BUCKET_S, BUCKET_S)


def view_end_bucket(end: float) -> int:
    """The last bucket of a view that ends at instant ``end`` (exclusive).

    ``end`` on a boundary (``1000``) ends after bucket ``990``; inside a bucket (``1005``)
    it includes that bucket, which is then partial.
    """
    start = bucket_start(end)
    return start - BUCKET_S if start == end else start


def is_late(ts: float, watermark: float, grace_s: float = BUCKET_S) -> bool:
    """True when ``ts`` is older than the open bucket (the watermark's) by more than grace."""
    return ts < bucket_start(watermark) - grace_s


def is_expired(bucket: int, stream_time: float, retention_s: int = RETENTION_S) -> bool:
    """True when bucket ``bucket`` ends at or before ``stream_time - retention_s``."""
    return bucket + BUCKET_S <= stream_time - retention_s


class Watermark:
    """Per-partition event-time progress: the largest ``started_at`` seen in each partition.

    - :meth:`observe` returns the partition's watermark: use it for :func:`is_late`, since
      one partition's lag says nothing about another's.
    - :meth:`stream_time` is the *minimum* over the active partitions, for expiry: a slow
      partition holds expiry back, so its buckets are not expired under its feet.
    - A partition is active while its watermark is within ``idle_s`` of the largest one. A
      partition that stops (no traffic, or lagging by more than the retention) is then left
      out, so it cannot hold expiry back forever and memory stays bounded (invariant I3).
      Its data arriving later is late, and expired if beyond retention.
    - :meth:`forget` drops a partition (on revocation at a rebalance).

    ``stream_time`` may step back when a partition is added with older data; that only
    pauses expiry (the summary view keeps its expiry horizon monotonic).
    """

    __slots__ = ("_times", "_idle_s")

    def __init__(self, *, idle_s: float = RETENTION_S) -> None:
        self._times: dict[Hashable, float] = {}
        self._idle_s = idle_s

    def observe(self, partition: Hashable, ts: float) -> float:
        """Record an event time; return the partition's (monotonic) watermark."""
        current = self._times.get(partition)
        if current is None or ts > current:
            self._times[partition] = ts
            return ts
        return current

    def partition_time(self, partition: Hashable) -> float | None:
        return self._times.get(partition)

    def forget(self, partition: Hashable) -> None:
        self._times.pop(partition, None)

    def max_time(self) -> float | None:
        return max(self._times.values(), default=None)

    def stream_time(self) -> float | None:
        """Min watermark over the active partitions; ``None`` before any event."""
        top = self.max_time()
        if top is None:
            return None
        floor = top - self._idle_s
        return min(t for t in self._times.values() if t >= floor)

    def __len__(self) -> int:
        return len(self._times)
