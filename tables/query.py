"""The query side: a bounded in-memory set of cells and the sliding views read from it.

A worker feeds :class:`SummaryView` with every cell of the table (all partitions, from the
changelog) through :meth:`~SummaryView.upsert` / :meth:`~SummaryView.delete`, and expires it
with the stream time. The API reads :class:`WindowStats` from it.

- **Views**: ``stats(key, "1m")`` merges the (at most 30) cells of the view that ends at
  ``end`` (an instant, exclusive; default: the end of the latest bucket seen). Rates are
  per second over the full view width, so a view whose last bucket is still open reads low
  by the part of that bucket still to come.
- **Index**: cells are indexed by key then bucket, so a view touches only its own cells;
  keys are indexed by service; the sorted key list is kept between changes.
- **Cache**: per (key, view, end bucket) the merge of all buckets but the last (the
  *prefix*) and the finished :class:`WindowStats`. Upserting the last bucket (the common
  case: the open bucket changes with every batch) drops only the stats; upserting an older
  bucket of the view drops both. Cache entries are bounded per key and in total.
- **Bounds** (invariant I3): at most ``max_cells`` cells. A new cell beyond the bound evicts
  the whole oldest bucket if it is older than the new cell, else the new cell is refused;
  both are counted (:meth:`~SummaryView.counters`). Cells older than the last expiry
  horizon are refused too, so a changelog replay cannot resurrect expired buckets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from tables.aggregate import COUNTERS, WindowAggregate, merged_examples
from tables.sketch import quantiles_of
from tables.windows import BUCKET_S, VIEWS, buckets_for_view, is_expired, view_end_bucket

__all__ = ["ALL", "SummaryView", "WindowStats"]

ALL: Final = "*"  # route / method of a rollup over several keys
_QUANTILES: Final = (0.5, 0.95, 0.99)
_CACHE_PER_KEY: Final = 8  # 3 views x (this end + the previous one, for sliding) + spare


@dataclass(frozen=True, slots=True)
class WindowStats:
    """One view of one key (or a rollup, with ``route``/``method`` ``"*"``). Read-only."""

    service: str
    route: str
    method: str
    view: str  # "10s" | "1m" | "5m"
    start: int  # epoch s, first bucket's start
    end: int  # epoch s, last bucket's end (exclusive)
    requests: int
    rate_per_s: float  # requests / view width
    errors: int
    error_rate: float  # errors / requests, 0.0 without requests
    timeouts: int
    timeout_rate: float
    retries: int
    retry_rate: float
    cancelled: int
    breaker_open: int
    late_events: int
    bytes_sent: int
    bytes_received: int
    p50_ms: float | None  # None without latency data
    p95_ms: float | None
    p99_ms: float | None
    max_pool_wait_ms: float | None  # None without pool-wait data
    status_classes: dict[str, int]
    error_classes: dict[str, int]
    example_trace_ids: tuple[str, ...]  # slowest attempts first, then the latest failures


def _stats(
    parts: Sequence[WindowAggregate],
    *,
    service: str,
    route: str,
    method: str,
    view: str,
    end_bucket: int,
) -> WindowStats:
    """The stats of the union of ``parts``, without building their merge."""
    width = VIEWS[view]
    totals = dict.fromkeys(COUNTERS, 0)
    pool_max = 0.0
    status_classes: dict[str, int] = {}
    error_classes: dict[str, int] = {}
    for p in parts:
        for name in COUNTERS:
            totals[name] += getattr(p, name)
        pool_max = max(pool_max, p.pool_wait_ms_max)
        for k, v in p.status_classes.items():
            status_classes[k] = status_classes.get(k, 0) + v
        for k, v in p.error_classes.items():
            error_classes[k] = error_classes.get(k, 0) + v
    n = totals["requests"]
    errors, timeouts, retries = totals["errors"], totals["timeouts"], totals["retries"]
    p50, p95, p99 = quantiles_of([p.latency for p in parts], _QUANTILES)
    trace_ids = tuple(dict.fromkeys(trace_id for _, trace_id, _ in merged_examples(parts)))
    return WindowStats(
        service=service,
        route=route,
        method=method,
        view=view,
        start=end_bucket + BUCKET_S - width,
        end=end_bucket + BUCKET_S,
        requests=n,
        rate_per_s=n / width,
        errors=errors,
        error_rate=errors / n if n else 0.0,
        timeouts=timeouts,
        timeout_rate=timeouts / n if n else 0.0,
        retries=retries,
        retry_rate=retries / n if n else 0.0,
        cancelled=totals["cancelled"],
        breaker_open=totals["breaker_open"],
        late_events=totals["late_events"],
        bytes_sent=totals["bytes_sent"],
        bytes_received=totals["bytes_received"],
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        max_pool_wait_ms=pool_max if totals["pool_wait_count"] else None,
        status_classes=dict(sorted(status_classes.items())),
        error_classes=dict(sorted(error_classes.items())),
        example_trace_ids=trace_ids,
    )


class _Cached:
    __slots__ = ("prefix", "stats")

    def __init__(self) -> None:
        self.prefix: WindowAggregate | None = None
        self.stats: WindowStats | None = None


class SummaryView:
    """All cells a worker holds, indexed for views; bounded by ``max_cells``."""

    def __init__(self, *, max_cells: int = 200_000) -> None:
        if max_cells < 1:
            raise ValueError("max_cells must be >= 1")
        self.max_cells = max_cells
        self._cells: dict[str, dict[int, WindowAggregate]] = {}
        self._buckets: dict[int, set[str]] = {}
        self._parts: dict[str, tuple[str, str, str]] = {}  # key -> (service, method, route)
        self._by_service: dict[str, set[str]] = {}
        self._sorted: list[str] | None = None
        self._n = 0
        self._stream_time: int | None = None
        self._horizon: float | None = None  # monotonic: the last expiry's stream time
        self._cache: dict[str, dict[tuple[str, int], _Cached]] = {}
        self._cached_entries = 0
        self._rollups: dict[str, dict[tuple[str, int, str], WindowStats | None]] = {}
        self._evicted = self._refused = self._expired = 0

    # -- writing ---------------------------------------------------------------------------

    def upsert(self, cell: WindowAggregate) -> bool:
        """Store (or replace) a cell; ``False`` if refused (expired, or no room).

        The view keeps a reference: do not mutate a cell after upserting it.
        Raises ``ValueError`` for a key that is not ``service|method|route``.
        """
        key, bucket = cell.key, cell.bucket
        if self._horizon is not None and is_expired(bucket, self._horizon):
            self._refused += 1
            return False
        per_key = self._cells.get(key)
        if per_key is None or bucket not in per_key:
            if self._n >= self.max_cells and not self._make_room(bucket):
                self._refused += 1
                return False
            if per_key is None:
                per_key = self._new_key(key)
            self._buckets.setdefault(bucket, set()).add(key)
            self._n += 1
        per_key[bucket] = cell
        self._invalidate(key, bucket)
        end = bucket + BUCKET_S
        if self._stream_time is None or end > self._stream_time:
            self._stream_time = end
        return True

    def delete(self, key: str, bucket: int) -> bool:
        """Remove one cell (a changelog tombstone). ``False`` if it was not there."""
        per_key = self._cells.get(key)
        if per_key is None or bucket not in per_key:
            return False
        self._remove(key, bucket)
        return True

    def expire(self, stream_time: float) -> int:
        """Remove the cells expired at ``stream_time`` (see ``is_expired``); return how many.

        The horizon only moves forward: an older ``stream_time`` removes nothing.
        """
        if self._horizon is None or stream_time > self._horizon:
            self._horizon = stream_time
        removed = 0
        for bucket in sorted(self._buckets):
            if not is_expired(bucket, self._horizon):
                break
            for key in sorted(self._buckets[bucket]):
                self._remove(key, bucket)
                removed += 1
        self._expired += removed
        return removed

    # -- reading ---------------------------------------------------------------------------

    @property
    def stream_time(self) -> int | None:
        """End of the latest bucket ever upserted (monotonic); ``None`` before any cell."""
        return self._stream_time

    def __len__(self) -> int:
        return self._n

    def counters(self) -> dict[str, int]:
        """Totals since creation: ``evicted_cells``, ``refused_cells``, ``expired_cells``."""
        return {
            "evicted_cells": self._evicted,
            "refused_cells": self._refused,
            "expired_cells": self._expired,
        }

    def keys(
        self, service: str | None = None, route: str | None = None, method: str | None = None
    ) -> list[str]:
        """Known keys (with at least one cell), sorted, filtered by exact parts."""
        if service is not None:
            keys = sorted(self._by_service.get(service, ()))
        else:
            if self._sorted is None:
                self._sorted = sorted(self._cells)
            keys = self._sorted
        if route is None and method is None:
            return list(keys)
        parts = self._parts
        return [
            k
            for k in keys
            if (method is None or parts[k][1] == method) and (route is None or parts[k][2] == route)
        ]

    def stats(self, key: str, view: str, *, end: float | None = None) -> WindowStats | None:
        """The view of one key; ``None`` for an unknown key (zeros if its view is empty)."""
        buckets_for_view(0, view)  # validates the view name
        if key not in self._cells:
            return None
        end_bucket = self._end_bucket(end)
        if end_bucket is None:
            return None
        entry = self._entry(key, view, end_bucket)
        if entry.stats is None:
            service, method, route = self._parts[key]
            entry.stats = _stats(
                self._view_parts(key, view, end_bucket, entry),
                service=service,
                route=route,
                method=method,
                view=view,
                end_bucket=end_bucket,
            )
        return entry.stats

    def parts(self, key: str, view: str, *, end: float | None = None) -> list[WindowAggregate]:
        """The aggregates whose union is ``key``'s view (a merged prefix and the last cell).

        Read-only: callers must not mutate them. Empty for an unknown key.
        """
        buckets_for_view(0, view)
        if key not in self._cells:
            return []
        end_bucket = self._end_bucket(end)
        if end_bucket is None:
            return []
        return self._view_parts(key, view, end_bucket, None)

    def query(
        self,
        *,
        service: str | None = None,
        route: str | None = None,
        method: str | None = None,
        view: str = "1m",
        end: float | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[WindowStats], int]:
        """One page of per-key views, sorted by key, and the total number of matching keys."""
        if offset < 0 or limit < 0:
            raise ValueError("offset and limit must be >= 0")
        buckets_for_view(0, view)
        keys = self.keys(service, route, method)
        page: list[WindowStats] = []
        for key in keys[offset : offset + limit]:
            stats = self.stats(key, view, end=end)
            if stats is not None:
                page.append(stats)
        return page, len(keys)

    def rollup(
        self, service: str, view: str, *, end: float | None = None, route: str | None = None
    ) -> WindowStats | None:
        """One view merged over all routes and methods of a service (or over one ``route``).

        ``route`` ``None`` or ``"*"`` means all routes; ``None`` when nothing matches.
        """
        buckets_for_view(0, view)
        end_bucket = self._end_bucket(end)
        route_filter = None if route in (None, ALL) else route
        if end_bucket is None or service not in self._by_service:
            return None  # nothing cached for unknown services: their names are unbounded
        cache = self._rollups.setdefault(service, {})
        cache_key = (view, end_bucket, route_filter or ALL)
        if cache_key in cache:
            return cache[cache_key]
        keys = self.keys(service, route_filter)
        result: WindowStats | None = None
        if keys:
            parts = []
            for key in keys:
                parts.extend(self._view_parts(key, view, end_bucket, None))
            merged = WindowAggregate.combine(
                parts, key=f"{service}|{ALL}|{route_filter or ALL}", bucket=end_bucket
            )
            result = _stats(
                [merged],
                service=service,
                route=route_filter or ALL,
                method=ALL,
                view=view,
                end_bucket=end_bucket,
            )
        if len(cache) >= _CACHE_PER_KEY * 4:
            cache.clear()
        cache[cache_key] = result
        return result

    # -- internals -------------------------------------------------------------------------

    def _end_bucket(self, end: float | None) -> int | None:
        if end is not None:
            if not math.isfinite(end):
                raise ValueError(f"end must be a finite epoch time, got {end!r}")
            return view_end_bucket(end)
        return None if self._stream_time is None else self._stream_time - BUCKET_S

    def _entry(self, key: str, view: str, end_bucket: int) -> _Cached:
        per_key = self._cache.setdefault(key, {})
        entry = per_key.get((view, end_bucket))
        if entry is None:
            if len(per_key) >= _CACHE_PER_KEY:
                del per_key[next(iter(per_key))]  # oldest entry first
                self._cached_entries -= 1
            if self._cached_entries >= max(1_000, self.max_cells // 4):
                self._cache.clear()
                self._cached_entries = 0
                per_key = self._cache.setdefault(key, {})
            entry = per_key[(view, end_bucket)] = _Cached()
            self._cached_entries += 1
        return entry

    def _view_parts(
        self, key: str, view: str, end_bucket: int, entry: _Cached | None
    ) -> list[WindowAggregate]:
        """The cells of ``view`` ending at ``end_bucket`` as [cached prefix, last cell]."""
        if entry is None:
            entry = self._entry(key, view, end_bucket)
        cells = self._cells[key]
        if entry.prefix is None:
            first = end_bucket + BUCKET_S - VIEWS[view]
            members = [cells[b] for b in range(first, end_bucket, BUCKET_S) if b in cells]
            before = self._cache[key].get((view, end_bucket - BUCKET_S))
            if before is not None and before.prefix is not None and members:
                # The view moved on by one bucket: slide the previous prefix (its cells are
                # current, or it would have been invalidated) instead of re-merging ~29 cells.
                entry.prefix = WindowAggregate.slide(
                    before.prefix,
                    cells.get(first - BUCKET_S),
                    cells.get(end_bucket - BUCKET_S),
                    members,
                    key=key,
                    bucket=end_bucket,
                )
            else:
                entry.prefix = WindowAggregate.combine(members, key=key, bucket=end_bucket)
        last = cells.get(end_bucket)
        return [entry.prefix] if last is None else [entry.prefix, last]

    def _invalidate(self, key: str, bucket: int) -> None:
        parts = self._parts.get(key)
        if parts is not None:
            self._rollups.pop(parts[0], None)
        per_key = self._cache.get(key)
        if not per_key:
            return
        for (view, end_bucket), entry in list(per_key.items()):
            if bucket == end_bucket:
                entry.stats = None
            elif end_bucket - VIEWS[view] < bucket < end_bucket:
                del per_key[(view, end_bucket)]
                self._cached_entries -= 1

    def _new_key(self, key: str) -> dict[int, WindowAggregate]:
        service, method, route = _split_key(key)
        self._parts[key] = (service, method, route)
        self._by_service.setdefault(service, set()).add(key)
        self._sorted = None
        per_key: dict[int, WindowAggregate] = {}
        self._cells[key] = per_key
        return per_key

    def _remove(self, key: str, bucket: int) -> None:
        per_key = self._cells[key]
        del per_key[bucket]
        self._n -= 1
        keys = self._buckets[bucket]
        keys.discard(key)
        if not keys:
            del self._buckets[bucket]
        self._invalidate(key, bucket)
        if not per_key:
            del self._cells[key]
            service = self._parts.pop(key)[0]
            same_service = self._by_service[service]
            same_service.discard(key)
            if not same_service:
                del self._by_service[service]
            self._cached_entries -= len(self._cache.pop(key, {}))
            self._sorted = None

    def _make_room(self, bucket: int) -> bool:
        oldest = min(self._buckets)
        if oldest >= bucket:
            return False
        victims = sorted(self._buckets[oldest])
        for key in victims:
            self._remove(key, oldest)
        self._evicted += len(victims)
        return True


def _split_key(key: str) -> tuple[str, str, str]:
    parts = key.split("|", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"table key {key!r} is not 'service|method|route'")
    return parts[0], parts[1], parts[2]
