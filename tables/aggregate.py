"""One table cell: everything counted for one (table key, bucket), mergeable and serializable.

A :class:`WindowAggregate` is the value of the table of window cells (one key per
(table key, bucket); windows are plain keys, see ``tables.windows``). It is built per Kafka
record or batch with :func:`aggregate_events` (one table write per cell per batch: every
write ships the whole value to the changelog), then merged into the stored cell with
:meth:`WindowAggregate.merge`. Views merge cells with :meth:`WindowAggregate.combine`, and
move a merged prefix by one bucket with :meth:`WindowAggregate.slide`.

Contract:

- **Counts are additive**: ``add`` then ``merge`` in any order and grouping give the same
  counts, the same sketch bins and the same examples (commutative, associative). Float sums
  (latency, pool wait) are equal up to rounding in the last bits.
- **Bounded**: dict keys come from the schema's closed sets (outcomes, error classes,
  status classes), the sketch has at most 2048 bins, and the examples are the
  ``SLOWEST_EXAMPLES`` slowest attempts plus the ``ERROR_EXAMPLES`` latest failed ones, each
  chosen by a total order, so the choice does not depend on arrival order.
- **Latency** covers attempts that were sent: ``breaker_open`` and ``budget_exhausted``
  attempts (nothing went on the wire) are counted but stay out of the sketch.
- **Codec**: ``to_data()`` / ``__json__()`` give a deterministic JSON-able dict;
  ``from_data(data, *, preferred_type=None)`` (Faust's value protocol) is its exact inverse
  and rejects anything outside the bounds with ``ValueError``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from typing import Any, Final

from pipeline.schema import ERROR_CLASSES, OUTCOMES, UNSENT_OUTCOMES, ProbeEvent, table_key
from tables.labels import STATUS_CLASSES
from tables.sketch import LatencySketch, merge_all
from tables.sketch import slide as slide_sketch
from tables.upstreams import MAX_UPSTREAMS_PER_CELL, OVERFLOW_UPSTREAM, UpstreamHealth
from tables.windows import BUCKET_S, bucket_start

__all__ = [
    "AGGREGATE_FORMAT",
    "ERROR_EXAMPLES",
    "SLOWEST_EXAMPLES",
    "STATUS_CLASSES",
    "WindowAggregate",
    "aggregate_events",
    "merged_examples",
]

AGGREGATE_FORMAT: Final = 1
SLOWEST_EXAMPLES: Final = 5
ERROR_EXAMPLES: Final = 3
_STATUS_BY_HUNDRED: Final = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")  # status // 100
# The additive fields of a cell: merged by summing (here and in ``tables.query``).
COUNTERS: Final = (
    "requests",
    "errors",
    "timeouts",
    "retries",
    "cancelled",
    "breaker_open",
    "late_events",
    "bytes_sent",
    "bytes_received",
    "pool_wait_count",
)
_BOUNDED_KEYS: Final = {
    "outcomes": OUTCOMES,
    "error_classes": ERROR_CLASSES,
    "status_classes": frozenset(STATUS_CLASSES),
}

Example = tuple[float, str, str]  # (elapsed_ms, trace_id, request_id)
ErrorExample = tuple[float, float, str, str]  # (started_at, elapsed_ms, trace_id, request_id)


class WindowAggregate:
    """Counters, latency sketch and example trace ids of one (key, bucket) cell."""

    __slots__ = (
        "key",
        "bucket",
        *COUNTERS,
        "outcomes",
        "error_classes",
        "status_classes",
        "pool_wait_ms_sum",
        "pool_wait_ms_max",
        "latency",
        "slowest",
        "recent_errors",
        "_slow_floor",
        "_error_floor",
        "upstreams",
    )

    def __init__(self, key: str, bucket: int) -> None:
        self.key = key
        self.bucket = bucket
        self.requests = 0
        self.errors = 0  # outcome != "ok" (HTTP errors included)
        self.timeouts = 0
        self.retries = 0  # attempt > 1
        self.cancelled = 0
        self.breaker_open = 0
        self.late_events = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.pool_wait_count = 0
        self.outcomes: dict[str, int] = {}
        self.error_classes: dict[str, int] = {}
        self.status_classes: dict[str, int] = {}
        self.pool_wait_ms_sum = 0.0
        self.pool_wait_ms_max = 0.0
        self.latency = LatencySketch()
        self.slowest: list[Example] = []  # descending
        self.recent_errors: list[ErrorExample] = []  # descending (latest first)
        self._slow_floor = -1.0  # an elapsed_ms below this cannot enter `slowest`
        self._error_floor = -1.0  # a started_at below this cannot enter `recent_errors`
        self.upstreams: dict[str, UpstreamHealth] = {}  # bounded: MAX_UPSTREAMS_PER_CELL

    # -- hot path --------------------------------------------------------------------------

    def add(self, event: ProbeEvent, *, late: bool = False) -> None:
        """Count one event. The caller guarantees ``table_key(event)`` and its bucket."""
        self.requests += 1
        outcome = event.outcome
        d = self.outcomes
        d[outcome] = d.get(outcome, 0) + 1
        status = event.status_code
        status_class = "none" if status is None else _STATUS_BY_HUNDRED[status // 100]
        d = self.status_classes
        d[status_class] = d.get(status_class, 0) + 1
        if outcome != "ok":
            self.errors += 1
            error_class = event.error_class
            if error_class is not None:
                d = self.error_classes
                d[error_class] = d.get(error_class, 0) + 1
            if outcome == "timeout":
                self.timeouts += 1
            elif outcome == "cancelled":
                self.cancelled += 1
            elif outcome == "breaker_open":
                self.breaker_open += 1
            if event.started_at >= self._error_floor:
                self._note_error(
                    (event.started_at, event.elapsed_ms, event.trace_id, event.request_id)
                )
        if event.attempt > 1:
            self.retries += 1
        if late:
            self.late_events += 1
        self.bytes_sent += event.bytes_sent
        self.bytes_received += event.bytes_received
        wait = event.pool_wait_ms
        if wait is not None:
            self.pool_wait_count += 1
            self.pool_wait_ms_sum += wait
            if wait > self.pool_wait_ms_max:
                self.pool_wait_ms_max = wait
        upstreams = self.upstreams
        health = upstreams.get(event.upstream)
        if health is None:
            name = event.upstream if len(upstreams) < MAX_UPSTREAMS_PER_CELL else OVERFLOW_UPSTREAM
            health = upstreams.get(name) or upstreams.setdefault(name, UpstreamHealth())
        health.add(event)
        if outcome not in UNSENT_OUTCOMES:
            elapsed = event.elapsed_ms
            self.latency._add(elapsed)  # schema-validated: finite, 0..86,400,000 ms
            if elapsed >= self._slow_floor:
                self._note_slow((elapsed, event.trace_id, event.request_id))

    def _note_slow(self, item: Example) -> None:
        slowest = self.slowest
        if item in slowest:
            return
        if len(slowest) < SLOWEST_EXAMPLES:
            slowest.append(item)
        elif item > slowest[-1]:
            slowest[-1] = item
        else:
            return
        slowest.sort(reverse=True)
        if len(slowest) == SLOWEST_EXAMPLES:
            self._slow_floor = slowest[-1][0]

    def _note_error(self, item: ErrorExample) -> None:
        errors = self.recent_errors
        if item in errors:
            return
        if len(errors) < ERROR_EXAMPLES:
            errors.append(item)
        elif item > errors[-1]:
            errors[-1] = item
        else:
            return
        errors.sort(reverse=True)
        if len(errors) == ERROR_EXAMPLES:
            self._error_floor = errors[-1][0]

    # -- reading ---------------------------------------------------------------------------

    @property
    def examples(self) -> list[Example]:
        """Offending attempts for alerts: the slowest first, then the latest failures."""
        return merged_examples((self,))

    # -- combining -------------------------------------------------------------------------

    def merge(self, other: WindowAggregate) -> None:
        """Add ``other`` (the same key and bucket) into this cell."""
        if other.key != self.key or other.bucket != self.bucket:
            raise ValueError(
                f"cannot merge cell ({other.key!r}, {other.bucket}) "
                f"into ({self.key!r}, {self.bucket})"
            )
        self._absorb((self, other))

    @classmethod
    def combine(cls, cells: Iterable[WindowAggregate], *, key: str, bucket: int) -> WindowAggregate:
        """A new aggregate of several cells (of any keys and buckets): views and rollups."""
        out = cls(key, bucket)
        out._absorb(cells)
        return out

    def _absorb(self, cells: Iterable[WindowAggregate]) -> None:
        """Replace this aggregate's content by the sum of ``cells`` (which may include it)."""
        cells = list(cells)
        requests = errors = timeouts = retries = cancelled = breaker_open = late = 0
        sent = received = pool_count = 0
        pool_sum = pool_max = 0.0
        outcomes: dict[str, int] = {}
        error_classes: dict[str, int] = {}
        status_classes: dict[str, int] = {}
        slowest: set[Example] = set()
        recent_errors: set[ErrorExample] = set()
        for c in cells:
            requests += c.requests
            errors += c.errors
            timeouts += c.timeouts
            retries += c.retries
            cancelled += c.cancelled
            breaker_open += c.breaker_open
            late += c.late_events
            sent += c.bytes_sent
            received += c.bytes_received
            pool_count += c.pool_wait_count
            pool_sum += c.pool_wait_ms_sum
            if c.pool_wait_ms_max > pool_max:
                pool_max = c.pool_wait_ms_max
            for target, source in (
                (outcomes, c.outcomes),
                (error_classes, c.error_classes),
                (status_classes, c.status_classes),
            ):
                for k, v in source.items():
                    target[k] = target.get(k, 0) + v
            slowest.update(c.slowest)
            recent_errors.update(c.recent_errors)
        self.requests, self.errors, self.timeouts, self.retries = (
            requests,
            errors,
            timeouts,
            retries,
        )
        self.cancelled, self.breaker_open, self.late_events = cancelled, breaker_open, late
        self.bytes_sent, self.bytes_received = sent, received
        self.pool_wait_count, self.pool_wait_ms_sum, self.pool_wait_ms_max = (
            pool_count,
            pool_sum,
            pool_max,
        )
        self.outcomes, self.error_classes, self.status_classes = (
            outcomes,
            error_classes,
            status_classes,
        )
        self.latency = merge_all(c.latency for c in cells)
        self._set_examples(slowest, recent_errors)
        self.upstreams = _merge_upstreams(cells)

    @classmethod
    def slide(
        cls,
        base: WindowAggregate,
        removed: WindowAggregate | None,
        added: WindowAggregate | None,
        members: Sequence[WindowAggregate],
        *,
        key: str,
        bucket: int,
    ) -> WindowAggregate:
        """``base - removed + added``, equal to ``combine(members)`` but far cheaper.

        ``base`` must be the combine of ``members`` minus ``added`` plus ``removed``
        (a view's prefix moving by one bucket). Counts are subtracted exactly; the
        maximum and the examples are recomputed from ``members`` only when the removed
        cell held them; the float sums may differ from a fresh combine in the last bits.
        """
        latency = slide_sketch(
            base.latency,
            None if removed is None else removed.latency,
            None if added is None else added.latency,
            [m.latency for m in members],
        )
        if latency is None:
            return cls.combine(members, key=key, bucket=bucket)
        out = cls(key, bucket)
        signed = [(base, 1), *(() if removed is None else ((removed, -1),))]
        signed += [] if added is None else [(added, 1)]
        for name in COUNTERS:
            setattr(out, name, sum(getattr(c, name) * k for c, k in signed))
        for name in _BOUNDED_KEYS:
            counts: dict[str, int] = {}
            for c, k in signed:
                for label, v in getattr(c, name).items():
                    counts[label] = counts.get(label, 0) + v * k
            setattr(out, name, {label: v for label, v in counts.items() if v})
        out.pool_wait_ms_sum = sum(c.pool_wait_ms_sum * k for c, k in signed)
        out.latency = latency
        if (
            removed is not None
            and removed.pool_wait_count
            and removed.pool_wait_ms_max >= base.pool_wait_ms_max
        ):
            out.pool_wait_ms_max = max((m.pool_wait_ms_max for m in members), default=0.0)
        else:
            out.pool_wait_ms_max = max(
                base.pool_wait_ms_max, 0.0 if added is None else added.pool_wait_ms_max
            )
        if removed is not None and (
            set(removed.slowest) & set(base.slowest)
            or set(removed.recent_errors) & set(base.recent_errors)
        ):
            sources: Sequence[WindowAggregate] = members
        else:
            sources = [base] if added is None else [base, added]
        out._set_examples(
            {e for c in sources for e in c.slowest}, {e for c in sources for e in c.recent_errors}
        )
        # Breaker observations are not subtractable (last state, transitions): re-merge them.
        out.upstreams = _merge_upstreams(members)
        return out

    def _set_examples(self, slowest: Iterable[Example], errors: Iterable[ErrorExample]) -> None:
        self.slowest = heapq.nlargest(SLOWEST_EXAMPLES, slowest)
        self.recent_errors = heapq.nlargest(ERROR_EXAMPLES, errors)
        full_slow = len(self.slowest) == SLOWEST_EXAMPLES
        full_err = len(self.recent_errors) == ERROR_EXAMPLES
        self._slow_floor = self.slowest[-1][0] if full_slow else -1.0
        self._error_floor = self.recent_errors[-1][0] if full_err else -1.0

    # -- codec -----------------------------------------------------------------------------

    def to_data(self) -> dict[str, Any]:
        """Deterministic JSON-able form (dicts sorted by key)."""
        data: dict[str, Any] = {"v": AGGREGATE_FORMAT, "key": self.key, "bucket": self.bucket}
        for name in COUNTERS:
            data[name] = getattr(self, name)
        for name in _BOUNDED_KEYS:
            data[name] = dict(sorted(getattr(self, name).items()))
        data["pool_wait_ms_sum"] = self.pool_wait_ms_sum
        data["pool_wait_ms_max"] = self.pool_wait_ms_max
        data["latency"] = self.latency.to_data()
        data["slowest"] = [list(e) for e in self.slowest]
        data["recent_errors"] = [list(e) for e in self.recent_errors]
        data["upstreams"] = {u: h.to_data() for u, h in sorted(self.upstreams.items())}
        return data

    def __json__(self) -> dict[str, Any]:
        return self.to_data()

    @classmethod
    def from_data(cls, data: Any, *, preferred_type: Any = None) -> WindowAggregate:
        """Inverse of :meth:`to_data`; raises ``ValueError`` on malformed or unbounded data."""
        if isinstance(data, cls):
            return data
        try:
            return cls._from_data(data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed window aggregate: {exc!r}") from exc

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> WindowAggregate:
        if data["v"] != AGGREGATE_FORMAT:
            raise ValueError(f"unsupported aggregate format {data['v']!r}")
        key, bucket = data["key"], data["bucket"]
        if not isinstance(key, str) or type(bucket) is not int or bucket % BUCKET_S:
            raise ValueError("aggregate key must be a str and bucket a multiple of BUCKET_S")
        cell = cls(key, bucket)
        for name in COUNTERS:
            setattr(cell, name, _count(data[name], name))
        for name, allowed in _BOUNDED_KEYS.items():
            counts = {str(k): _count(v, name) for k, v in data[name].items()}
            unknown = set(counts) - allowed
            if unknown:
                raise ValueError(f"unknown {name} keys: {sorted(unknown)}")
            setattr(cell, name, counts)
        cell.pool_wait_ms_sum = float(data["pool_wait_ms_sum"])
        cell.pool_wait_ms_max = float(data["pool_wait_ms_max"])
        cell.latency = LatencySketch.from_data(data["latency"])
        slowest = [(float(ms), str(t), str(r)) for ms, t, r in data["slowest"]]
        errors = [(float(ts), float(ms), str(t), str(r)) for ts, ms, t, r in data["recent_errors"]]
        if len(slowest) > SLOWEST_EXAMPLES or len(errors) > ERROR_EXAMPLES:
            raise ValueError("too many examples")
        cell._set_examples(slowest, errors)
        upstreams = data.get("upstreams", {})
        if len(upstreams) > MAX_UPSTREAMS_PER_CELL:
            raise ValueError("too many upstreams in one cell")
        cell.upstreams = {str(u): UpstreamHealth.from_data(h) for u, h in upstreams.items()}
        return cell

    def __repr__(self) -> str:
        return (
            f"WindowAggregate(key={self.key!r}, bucket={self.bucket}, "
            f"requests={self.requests}, errors={self.errors})"
        )


def merged_examples(cells: Iterable[WindowAggregate]) -> list[Example]:
    """The examples of the union of ``cells``: the slowest first, then the latest failures.

    Deduplicated by request id; the same as ``WindowAggregate.combine(cells).examples``.
    """
    cells = list(cells)
    if len(cells) == 1:
        slowest, errors = cells[0].slowest, cells[0].recent_errors
    else:
        slowest = heapq.nlargest(SLOWEST_EXAMPLES, {e for c in cells for e in c.slowest})
        errors = heapq.nlargest(ERROR_EXAMPLES, {e for c in cells for e in c.recent_errors})
    seen = {request_id for _, _, request_id in slowest}
    out = list(slowest)
    for _, elapsed, trace_id, request_id in errors:
        if request_id not in seen:
            seen.add(request_id)
            out.append((elapsed, trace_id, request_id))
    return out


def _merge_upstreams(cells: Iterable[WindowAggregate]) -> dict[str, UpstreamHealth]:
    grouped: dict[str, list[UpstreamHealth]] = {}
    for c in cells:
        for upstream, health in c.upstreams.items():
            grouped.setdefault(upstream, []).append(health)
    merged = {u: UpstreamHealth.merge_all(hs) for u, hs in sorted(grouped.items())}
    if len(merged) > MAX_UPSTREAMS_PER_CELL:  # a merge over routes may see more upstreams
        kept = dict(list(merged.items())[: MAX_UPSTREAMS_PER_CELL - 1])
        rest = [h for u, h in merged.items() if u not in kept]
        kept[OVERFLOW_UPSTREAM] = UpstreamHealth.merge_all(rest)
        merged = kept
    return merged


def _count(value: Any, name: str) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
    return value


def aggregate_events(
    events: Iterable[ProbeEvent], *, watermark: float | None = None, grace_s: float = BUCKET_S
) -> dict[tuple[str, int], WindowAggregate]:
    """Group events by ``(table_key(event), bucket_start(event.started_at))``.

    With ``watermark`` (the partition's watermark before this batch), events older than its
    open bucket by more than ``grace_s`` are flagged late (see :func:`tables.windows.is_late`).
    The dict keeps first-seen order.
    """
    cells: dict[tuple[str, int], WindowAggregate] = {}
    # Inlined is_late(ts, watermark, grace_s) and bucket_start(ts): this loop is the hot path.
    horizon = None if watermark is None else bucket_start(watermark) - grace_s
    for event in events:
        ts = event.started_at
        cell_id = (table_key(event), int(ts // BUCKET_S) * BUCKET_S)
        cell = cells.get(cell_id)
        if cell is None:
            cell = cells[cell_id] = WindowAggregate(*cell_id)
        cell.add(event, late=horizon is not None and ts < horizon)
    return cells
