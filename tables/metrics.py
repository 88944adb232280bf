"""Prometheus metrics of the outbound calls, fed by probe events: one custom collector.

:class:`EgressMetrics` keeps its own counts (label tuple -> cell) and builds metric families
only when scraped, so :meth:`EgressMetrics.observe` costs a few dict look-ups and a bisect,
not a prometheus_client child per label set per call.

Contract (docs/metrics.md lists every family):

- **Stable buckets.** :data:`DURATION_BUCKETS` is frozen; changing it is a breaking change
  for every dashboard and recording rule.
- **Bounded labels and memory.** Closed sets come from the schema; services may be limited by
  an allow-list (others become ``_other``); each family holds at most ``max_series`` series
  (pipeline families ``pipeline_max_series``), past which open labels become ``_overflow``
  (:mod:`tables.labels`). ``egresswatch_metric_series`` and
  ``egresswatch_label_overflow_total`` show how close each family is to its cap.
- **Deterministic.** Values depend only on the events and their order, never on the wall
  clock: the same events give a byte-identical exposition. Series are sorted by labels.
- **Exemplars.** Each bucket of each histogram series keeps the trace_id of the latest event
  that fell in it (OpenMetrics exposition only), timestamped with the event's ``started_at``.
- **Thread-safe.** One lock; a scrape copies the counts under it and formats outside it.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Final

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Exemplar

from pipeline.schema import UNSENT_OUTCOMES, ProbeEvent
from tables.labels import (
    BREAKER_STATE_VALUES,
    ERROR_CLASS_LABELS,
    METHOD_LABELS,
    OTHER,
    STATUS_CLASS_BY_CODE,
    STATUS_CLASSES,
    CappedFamily,
    Labels,
    error_class_label,
    method_label,
)

__all__ = [
    "DEFAULT_MAX_SERIES",
    "DEFAULT_PIPELINE_MAX_SERIES",
    "DURATION_BUCKETS",
    "POOL_WAIT_WINDOW_SECONDS",
    "EgressMetrics",
]

# Upper bounds (seconds) of the duration histogram, +Inf implied. FROZEN: see module doc.
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25,
    0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
DEFAULT_MAX_SERIES: Final = 2_000
DEFAULT_PIPELINE_MAX_SERIES: Final = 200
# egresswatch_outbound_pool_wait_seconds_max covers the latest two windows of event time.
POOL_WAIT_WINDOW_SECONDS: Final = 60.0

_LE: Final = (*(repr(b) for b in DURATION_BUCKETS), "+Inf")  # as floatToGoString writes them
_SRM: Final = ("service", "route", "method")
_SR: Final = ("service", "route")
_SU: Final = ("service", "upstream")
# (name, type, label names, help) of every family but the histogram, in exposition order.
_FAMILIES: Final[tuple[tuple[str, str, tuple[str, ...], str], ...]] = (
    ("egresswatch_outbound_requests_total", "counter", (*_SRM, "status_class"),
     "Outbound request attempts by status class (none: no response)."),
    ("egresswatch_outbound_errors_total", "counter", (*_SR, "error_class"),
     "Outbound request attempts that ended with an error class (HTTP 4xx/5xx included)."),
    ("egresswatch_outbound_retries_total", "counter", _SR,
     "Outbound request attempts that were retries (attempt > 1)."),
    ("egresswatch_outbound_timeouts_total", "counter", (*_SR, "error_class"),
     "Outbound request attempts that timed out, by timeout kind."),
    ("egresswatch_outbound_bytes_sent_total", "counter", ("service",),
     "Request body bytes sent upstream."),
    ("egresswatch_outbound_bytes_received_total", "counter", ("service",),
     "Response body bytes read from upstream."),
    ("egresswatch_outbound_pool_wait_seconds_max", "gauge", _SU,
     "Longest connection-pool wait in the latest two 60 s windows of event time."),
    ("egresswatch_breaker_state", "gauge", _SU,
     "Last circuit-breaker state seen on events: 0 closed, 1 half_open, 2 open."),
    ("egresswatch_dead_letters_total", "counter", ("reason",),
     "Events sent to the dead-letter topic, by reason code."),
    ("egresswatch_late_events_total", "counter", ("service",),
     "Events that arrived after their window closed."),
    ("egresswatch_dropped_events_total", "counter", ("stage", "reason"),
     "Events dropped by a bounded stage, by stage and reason."),
)  # fmt: skip
DURATION: Final = "egresswatch_outbound_request_duration_seconds"
_SERIES: Final = "egresswatch_metric_series"
_OVERFLOW: Final = "egresswatch_label_overflow_total"

_Exemplar = tuple[str, float, float]  # trace_id, value (s), the event's started_at
_Row = tuple[Labels, float, int]  # label values, value, observations if an overflow series
_HistRow = tuple[Labels, list[int], float, list[_Exemplar | None], bool]


class _Hist:
    """One histogram series: per-bucket (not cumulative) counts, sum, latest exemplars."""

    __slots__ = ("counts", "exemplars", "total")

    def __init__(self) -> None:
        self.counts = [0] * len(_LE)
        self.total = 0.0
        self.exemplars: list[_Exemplar | None] = [None] * len(_LE)


class _Upstream:
    """Last breaker state and windowed max pool wait of one (service, upstream)."""

    __slots__ = ("breaker", "breaker_events", "cur_max", "prev_max", "wait_events", "window")

    def __init__(self) -> None:
        self.breaker = 0.0
        self.breaker_events = 0
        self.wait_events = 0
        self.window = -1
        self.cur_max = 0.0
        self.prev_max = 0.0

    def pool_wait(self, started_at: float, seconds: float) -> None:
        self.wait_events += 1
        window = int(started_at // POOL_WAIT_WINDOW_SECONDS)
        if window == self.window:
            self.cur_max = max(self.cur_max, seconds)
        elif window > self.window:
            self.prev_max = self.cur_max if window == self.window + 1 else 0.0
            self.cur_max = seconds
            self.window = window
        elif window == self.window - 1:  # a late event of the previous window
            self.prev_max = max(self.prev_max, seconds)

    @property
    def wait_max(self) -> float:
        return max(self.cur_max, self.prev_max)


class _Slot:
    """Cells of one raw (service, route, method), cached: the hot path's only look-up."""

    __slots__ = ("errors", "hist", "labels", "requests", "retries", "svc", "timeouts", "up")

    def __init__(self, labels: tuple[str, str, str], hist: _Hist, svc: list[int]) -> None:
        self.labels = labels  # (service, route, method) label values, already folded
        self.hist = hist
        self.svc = svc  # [bytes sent, bytes received, events] of the service
        self.requests: dict[int | None, list[int]] = {}
        self.errors: dict[str, list[int]] = {}
        self.timeouts: dict[str, list[int]] = {}
        self.retries: list[int] | None = None
        self.up: tuple[str, _Upstream] | None = None


def _counter() -> list[int]:
    return [0]


class EgressMetrics(Collector):
    """The metrics engine: register once, feed with :meth:`observe` / :meth:`observe_many`.

    ``registry``: where to register (default: a new one; kept as ``self.registry``).
    ``max_series``: cap of each event-fed family. ``pipeline_max_series``: cap of the
    dead-letter, late and dropped families. ``services``: optional allow-list of services;
    the others are labelled ``_other``.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_series: int = DEFAULT_MAX_SERIES,
        pipeline_max_series: int = DEFAULT_PIPELINE_MAX_SERIES,
        services: Iterable[str] | None = None,
    ) -> None:
        self._allowed = None if services is None else frozenset(services)
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, str, str], _Slot] = {}
        self._max_slots = 2 * max_series
        n_methods, n_errors = len(METHOD_LABELS) + 1, len(ERROR_CLASS_LABELS)
        cap, pcap = max_series, pipeline_max_series
        self._hist = CappedFamily(DURATION, cap, n_methods, (0, 1), _Hist)
        self._requests = CappedFamily(
            "requests", cap, n_methods * len(STATUS_CLASSES), (0, 1), _counter
        )
        self._errors = CappedFamily("errors", cap, n_errors, (0, 1), _counter)
        self._retries = CappedFamily("retries", cap, 1, (0, 1), _counter)
        self._timeouts = CappedFamily("timeouts", cap, n_errors, (0, 1), _counter)
        self._svc = CappedFamily("services", cap, 1, (0,), lambda: [0, 0, 0])
        self._upstreams = CappedFamily("upstreams", cap, 1, (0, 1), _Upstream)
        self._dead = CappedFamily("dead_letters", pcap, 1, (0,), _counter)
        self._late = CappedFamily("late_events", pcap, 1, (0,), _counter)
        self._dropped = CappedFamily("dropped_events", pcap, 1, (0, 1), _counter)
        self.registry = CollectorRegistry() if registry is None else registry
        self.registry.register(self)

    # -- feeding ------------------------------------------------------------------------

    def observe(self, event: ProbeEvent) -> None:
        """Count one probe event."""
        self.observe_many((event,))

    def observe_many(self, events: Iterable[ProbeEvent]) -> None:
        """Count a batch of probe events under one lock acquisition."""
        bounds = DURATION_BUCKETS
        with self._lock:
            slots = self._slots
            for ev in events:
                slot = slots.get((ev.service, ev.route, ev.method))
                if slot is None:
                    slot = self._slot(ev)
                if ev.outcome not in UNSENT_OUTCOMES:
                    # Refused before sending (~0 ms): not a latency, as in the API's quantiles.
                    seconds = ev.elapsed_ms / 1000.0
                    i = bisect_left(bounds, seconds)
                    hist = slot.hist
                    hist.counts[i] += 1
                    hist.total += seconds
                    hist.exemplars[i] = (ev.trace_id, seconds, ev.started_at)
                cell = slot.requests.get(ev.status_code)
                if cell is None:
                    cell = self._request_cell(slot, ev.status_code)
                cell[0] += 1
                if ev.error_class is not None:
                    self._error(slot, ev.error_class, ev.outcome == "timeout")
                if ev.attempt > 1:
                    retries = slot.retries
                    if retries is None:
                        retries = slot.retries = self._retries.cell(slot.labels[:2])
                    retries[0] += 1
                svc = slot.svc
                svc[0] += ev.bytes_sent
                svc[1] += ev.bytes_received
                svc[2] += 1
                if ev.breaker_state is not None or ev.pool_wait_ms is not None:
                    self._upstream(slot, ev)

    def inc_dead_letter(self, reason: str, n: int = 1) -> None:
        """Count ``n`` events sent to the dead-letter topic for ``reason`` (a reason code)."""
        self._inc(self._dead, (reason,), n)

    def inc_late(self, service: str, n: int = 1) -> None:
        """Count ``n`` events of ``service`` that arrived after their window closed."""
        self._inc(self._late, (self._service_label(service),), n)

    def inc_dropped(self, stage: str, reason: str, n: int = 1) -> None:
        """Count ``n`` events dropped at ``stage`` (a bounded buffer, a sink...) for ``reason``."""
        self._inc(self._dropped, (stage, reason), n)

    def _inc(self, family: CappedFamily[list[int]], labels: Labels, n: int) -> None:
        if n < 0:
            raise ValueError(f"{family.name}: a counter cannot decrease (n={n})")
        with self._lock:
            family.cell(labels)[0] += n

    # -- slow paths, called with the lock held ------------------------------------------

    def _service_label(self, service: str) -> str:
        return service if self._allowed is None or service in self._allowed else OTHER

    def _slot(self, ev: ProbeEvent) -> _Slot:
        service = self._service_label(ev.service)
        labels = (service, ev.route, method_label(ev.method))
        slot = _Slot(labels, self._hist.cell(labels), self._svc.cell((service,)))
        if len(self._slots) < self._max_slots:  # past it, resolved anew on every event
            self._slots[(ev.service, ev.route, ev.method)] = slot
        return slot

    def _request_cell(self, slot: _Slot, code: int | None) -> list[int]:
        cell = self._requests.cell((*slot.labels, STATUS_CLASS_BY_CODE.get(code, "none")))
        if code is None or code in STATUS_CLASS_BY_CODE:  # keeps the slot's keys bounded
            slot.requests[code] = cell
        return cell

    def _error(self, slot: _Slot, error_class: str, timeout: bool) -> None:
        targets = ((slot.errors, self._errors), (slot.timeouts, self._timeouts))
        for cache, fam in targets if timeout else targets[:1]:
            cell = cache.get(error_class)
            if cell is None:
                label = error_class_label(error_class)
                cell = fam.cell((*slot.labels[:2], label))
                if label == error_class:
                    cache[error_class] = cell
            cell[0] += 1

    def _upstream(self, slot: _Slot, ev: ProbeEvent) -> None:
        if slot.up is not None and slot.up[0] == ev.upstream:
            cell = slot.up[1]
        else:
            cell = self._upstreams.cell((slot.labels[0], ev.upstream))
            slot.up = (ev.upstream, cell)
        if ev.breaker_state is not None:
            cell.breaker = BREAKER_STATE_VALUES.get(ev.breaker_state, cell.breaker)
            cell.breaker_events += 1
        if ev.pool_wait_ms is not None:
            cell.pool_wait(ev.started_at, ev.pool_wait_ms / 1000.0)

    # -- exposition -----------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return _build([], [[] for _ in _FAMILIES])

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            hists = [
                (k, list(h.counts), h.total, list(h.exemplars), self._hist.is_overflow(k))
                for k, h in self._hist.series.items()
            ]
            rows = self._rows()
        return iter(_build(hists, rows))

    def _rows(self) -> list[list[_Row]]:
        """A copy of the rows of each family of ``_FAMILIES``, in that order."""

        def counter(fam: CappedFamily[list[int]]) -> list[_Row]:
            return [(k, c[0], c[0] if fam.is_overflow(k) else 0) for k, c in fam.series.items()]

        svc = [(k, c, self._svc.is_overflow(k)) for k, c in self._svc.series.items()]
        ups = [(k, u, self._upstreams.is_overflow(k)) for k, u in self._upstreams.series.items()]
        return [
            counter(self._requests),
            counter(self._errors),
            counter(self._retries),
            counter(self._timeouts),
            [(k, c[0], c[2] if o else 0) for k, c, o in svc],
            [(k, c[1], c[2] if o else 0) for k, c, o in svc],
            [(k, u.wait_max, u.wait_events if o else 0) for k, u, o in ups if u.wait_events],
            [(k, u.breaker, u.breaker_events if o else 0) for k, u, o in ups if u.breaker_events],
            counter(self._dead),
            counter(self._late),
            counter(self._dropped),
        ]


def _build(hists: list[_HistRow], rows: list[list[_Row]]) -> list[Metric]:
    """Metric families from a snapshot, every series sorted by its label values."""
    duration = HistogramMetricFamily(
        DURATION,
        "Duration of outbound request attempts, from start to body read or error.",
        labels=_SRM,
        unit="seconds",
    )
    series = GaugeMetricFamily(_SERIES, "Series exported per metric family.", labels=["metric"])
    overflows = CounterMetricFamily(
        _OVERFLOW, "Observations recorded under _overflow labels.", labels=["metric"]
    )
    hist_overflow = 0
    for labels, counts, total, exemplars, folded in sorted(hists, key=lambda h: h[0]):
        buckets: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
        cumulative = 0
        for le, count, exemplar in zip(_LE, counts, exemplars, strict=True):
            cumulative += count
            if exemplar is None:
                buckets.append((le, cumulative))
            else:
                trace_id, value, started_at = exemplar
                buckets.append(
                    (le, cumulative, Exemplar({"trace_id": trace_id}, value, started_at))
                )
        duration.add_metric(labels, buckets, total)
        hist_overflow += cumulative if folded else 0
    out: list[Metric] = [duration]
    series.add_metric([DURATION], len(hists))
    overflows.add_metric([DURATION], hist_overflow)
    for (name, kind, label_names, doc), family_rows in zip(_FAMILIES, rows, strict=True):
        family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        family = family_type(name, doc, labels=label_names)
        for labels, value, _ in sorted(family_rows, key=lambda r: r[0]):
            family.add_metric(labels, value)
        out.append(family)
        series.add_metric([name], len(family_rows))
        overflows.add_metric([name], sum(r[2] for r in family_rows))
    return [*out, series, overflows]
