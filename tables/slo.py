"""SLO conditions: which targets a rule watches, and whether their window stats breach it.

Pure functions of the window statistics; no clock, no state (the state machine lives in
``tables/alerting.py``). The formulas are in ``docs/alerts.md``:

- ``latency_p99``: a window pair breaches when p99 > ``threshold_ms`` on both views;
- ``error_rate`` / ``timeout_rate``: budget = 1 - objective, burn rate = rate / budget, and a
  pair breaches when the burn rate > ``burn_rate`` on both views (Google SRE workbook,
  multi-window multi-burn-rate alerts);
- a view with fewer than ``min_requests`` requests, or without a value, never breaches;
- while an alert is firing, it *holds* as long as both views of a pair stay above
  ``resolve_ratio x threshold`` (hysteresis).

The window statistics are ``tables.query.WindowStats``, read through the structural Protocol
:class:`WindowStatsLike`: the engine states the dozen attributes it reads, any object with
them fits (tests pass small fakes), and the query side may grow without touching alerting.
Per-service rollups come with ``route = method = "*"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple, Protocol

from tables.query import ALL
from tables.slo_rules import BurnWindow, Kind, SloRule, budget, decimal_clean

__all__ = [
    "MAX_EXAMPLES",
    "ROLLUP",
    "Assessment",
    "Target",
    "WindowStatsLike",
    "assess",
    "burn_rate",
    "index_stats",
    "observed_value",
    "valid_trace_id",
    "watches",
]

ROLLUP: Final = ALL  # the route and method of a whole-service rollup (tables.query)
"""The route and method of a per-service rollup."""
MAX_EXAMPLES: Final = 5
"""At most this many example trace ids travel on an alert."""
_TRACE_ID_RE: Final = re.compile(r"^[0-9a-f]{32}$")


class WindowStatsLike(Protocol):
    """What the engine reads from one view of one key: ``tables.query.WindowStats`` fits."""

    @property
    def service(self) -> str: ...
    @property
    def route(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def view(self) -> str:
        """``10s``, ``1m`` or ``5m``."""

    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def requests(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def error_rate(self) -> float: ...
    @property
    def timeouts(self) -> int: ...
    @property
    def timeout_rate(self) -> float: ...
    @property
    def p99_ms(self) -> float | None: ...
    @property
    def example_trace_ids(self) -> Sequence[str]: ...


class Target(NamedTuple):
    """What one alert is about: a route of a service, or the service rollup (``*``, ``*``)."""

    service: str
    route: str
    method: str


@dataclass(frozen=True, slots=True)
class Assessment:
    """The verdict of one rule on one target at one instant."""

    breached: bool
    """True when some window pair is over its threshold (or its hold threshold)."""
    window: BurnWindow
    """The breaching pair (first in rule order), else the rule's first pair."""
    threshold: float
    """The firing threshold of ``window`` in the kind's unit (ms or a rate)."""
    value: float | None
    """The long view's value of ``window``; None without data."""
    burn_rate: float | None
    """Rate kinds, when breached: ``value / budget``; else None."""
    by_view: dict[str, float] = field(default_factory=dict)
    """Every view the rule reads that has requests and a value, even under min_requests."""
    example_trace_ids: tuple[str, ...] = ()
    """Valid trace ids from the breaching pair's stats, short view first."""


def index_stats(stats: Iterable[WindowStatsLike]) -> dict[Target, dict[str, WindowStatsLike]]:
    """Group stats by target, then view. For a repeated (target, view), the latest end wins."""
    index: dict[Target, dict[str, WindowStatsLike]] = {}
    for item in stats:
        views = index.setdefault(Target(item.service, item.route, item.method), {})
        current = views.get(item.view)
        if current is None or item.end >= current.end:
            views[item.view] = item
    return index


def watches(rule: SloRule, target: Target) -> bool:
    """Does ``rule`` watch ``target``? Rollup rules see only rollups, route rules only routes.

    A route rule without ``method`` watches every (route, method) key separately; with
    ``method = "*"`` it watches the route's rollup over its methods (``(service, route, "*")``).
    """
    if rule.service != "*" and rule.service != target.service:
        return False
    if rule.route is None:
        return target.route == ROLLUP and target.method == ROLLUP
    if target.route == ROLLUP or (rule.route != "*" and rule.route != target.route):
        return False
    if rule.method is None:  # every method separately, not a route's rollup over methods
        return target.method != ROLLUP
    return rule.method == target.method


def observed_value(kind: Kind, stats: WindowStatsLike) -> float | None:
    """The value a rule of ``kind`` compares: p99 in ms, or a rate in 0..1."""
    if kind == "latency_p99":
        return stats.p99_ms
    if kind == "error_rate":
        return stats.error_rate
    return stats.timeout_rate


def burn_rate(rate: float, objective: float) -> float:
    """How many times faster than allowed the error budget burns: ``rate / (1 - objective)``."""
    return decimal_clean(rate / budget(objective))


def valid_trace_id(value: str) -> bool:
    """32 lowercase hex characters, not all zero (W3C trace-context)."""
    return bool(_TRACE_ID_RE.match(value)) and value != "0" * 32


def assess(rule: SloRule, views: Mapping[str, WindowStatsLike], *, holding: bool) -> Assessment:
    """Evaluate ``rule`` on one target's stats by view.

    ``holding=False`` asks "does it breach?" (inactive or pending alerts); ``holding=True``
    asks "does a firing alert still hold?", with thresholds scaled by ``resolve_ratio``.
    """
    scale = rule.resolve_ratio if holding else 1.0
    values: dict[str, float] = {}
    evidence: set[str] = set()
    for view in rule.reads:
        stats = views.get(view)
        if stats is None or stats.requests < 1:
            continue
        value = observed_value(rule.kind, stats)
        if value is not None and math.isfinite(value):  # NaN or inf is no evidence
            values[view] = float(value)
            if stats.requests >= rule.min_requests:
                evidence.add(view)
    for window, threshold in zip(rule.windows, rule.thresholds, strict=True):
        if window.long in evidence and window.short in evidence:
            long = values[window.long]
            if min(long, values[window.short]) > threshold * scale:
                return Assessment(
                    breached=True,
                    window=window,
                    threshold=threshold,
                    value=long,
                    burn_rate=_burn(rule, long),
                    by_view=values,
                    example_trace_ids=_examples(views, (window.short, window.long)),
                )
    return Assessment(
        breached=False,
        window=rule.windows[0],
        threshold=rule.thresholds[0],
        value=values.get(rule.windows[0].long),
        burn_rate=None,
        by_view=values,
    )


def _burn(rule: SloRule, value: float) -> float | None:
    return None if rule.objective is None else burn_rate(value, rule.objective)


def _examples(views: Mapping[str, WindowStatsLike], order: tuple[str, str]) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for view in order:
        stats = views.get(view)
        for trace_id in stats.example_trace_ids if stats is not None else ():
            if len(found) >= MAX_EXAMPLES:
                return tuple(found)
            if isinstance(trace_id, str) and valid_trace_id(trace_id):
                found[trace_id] = None
    return tuple(found)
