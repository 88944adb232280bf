"""The SLOs, judged as sustained breaches: the rules file on the ground truth, plus the seed's.

Rules (``tables/defaults/slo-rules.toml``, docs/alerts.md) are replayed on the callers' ground
truth (``calls.jsonl``, probed calls, cardinality-attack calls left out), second by second, the way
the workers' alert engine reads its windows: a call counts at its end (``intended_at`` +
latency); for each target (per route with ``route = "*"``, the service rollup without a route)
and each window pair, the long and the short view must both hold ``min_requests`` calls and
both be over the threshold, and the breach must hold ``for_s`` seconds. An error is any outcome
but ``ok``; a timeout is the ``timeout`` outcome. Seconds inside a caller-affecting incident
(HTTP, TCP, packet loss; an HTTP fault on one route too, for every route: it opens the
upstream's circuit breaker, which refuses the calls of all its routes) and for the rule's
short view + ``judge.alert_grace_s`` after it are not evaluated, and a breach held across
them starts over. ``pass``: evaluated with evidence, never breached; ``fail``: the breaches,
when and where; ``unknown``: no second had enough calls.

The seed's SLOs are judged over 60 s windows (a window with fewer than :data:`MIN_WINDOW`
values is no evidence), never as a whole-run figure: the probe -> WebSocket delay p99
(``received_at - ended_at`` of events, clients not made slow on purpose, away from Kafka
outages and worker kills) under ``judge.ws_delay_p99_max_s``, and the workers' API p95
(``api_latency_ms`` of the samples, away from worker kills) under ``judge.api_p95_max_ms``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Final

import numpy as np

from pipeline.campaign._checks_common import (
    CALLER_FAULTS,
    FAIL,
    FIRST,
    PASS,
    UNKNOWN,
    Band,
    RawRun,
    incident_bands,
    quantile,
)
from pipeline.campaign.raw import CallRecord
from tables.slo_rules import VIEW_SECONDS, SloRule

__all__ = ["MIN_WINDOW", "check_rule", "check_seed_slos"]

MIN_WINDOW: Final = 20
WINDOW_S: Final = 60.0
_PIPELINE_FAULTS: Final = frozenset({"kafka_down", "worker_kill"})

Target = tuple[str, str]


def check_rule(run: RawRun, rule: SloRule, source: str) -> dict[str, Any]:
    """One rule of the rules file, judged on the ground truth."""
    grace = run.plan.judge.alert_grace_s if run.plan is not None else 0.0
    # A breach needs the short view over the threshold too, so once the short view holds no
    # call of the incident, the incident can no longer make the rule breach.
    reach = max(VIEW_SECONDS[w.short] for w in rule.windows)
    bands = [b for b in incident_bands(run) if b.kind in CALLER_FAULTS]
    series = _series(run.calls, rule)
    breaches: list[dict[str, Any]] = []
    evaluated = excluded = 0
    for target, (ends, values) in sorted(series.items()):
        out = [(b.start, b.end + reach + grace) for b in bands if _hits(b, target)]
        held_since: float | None = None
        for t in range(math.floor(ends[0]) + 1, math.ceil(ends[-1]) + 2):
            if any(a <= t <= z for a, z in out):
                excluded += 1
                held_since = None
                continue
            judged, breach = _breach(rule, ends, values, float(t))
            evaluated += judged
            if breach is None:
                held_since = None
                continue
            held_since = t if held_since is None else held_since
            if t - held_since >= rule.for_s:
                _extend(breaches, target, held_since, t, breach, rule)
    row: dict[str, Any] = {
        "name": rule.name,
        "source": source,
        "kind": rule.kind,
        "evaluated_seconds": evaluated,
        "excluded_seconds": excluded,
        "breaches": breaches[:FIRST],
        "breach_count": len(breaches),
    }
    if breaches:
        first = breaches[0]
        detail = (
            f"{len(breaches)} sustained breaches outside incidents; first {first['service']} "
            f"{first['route']} from t={first['start']:.0f} to {first['end']:.0f} "
            f"({first['value']:.4g} > {first['threshold']:.4g} on {first['views']})"
        )
        return row | {"verdict": FAIL, "detail": detail}
    if not evaluated:
        return row | {"verdict": UNKNOWN, "detail": "no window with enough calls outside incidents"}
    detail = f"never breached over {evaluated} target-seconds outside incidents"
    return row | {"verdict": PASS, "detail": detail}


def _series(calls: list[CallRecord], rule: SloRule) -> dict[Target, tuple[Any, Any]]:
    """Per target: end times (sorted) and a (latency, error, timeout) row per call."""
    rows: dict[Target, list[tuple[float, float, float, float]]] = defaultdict(list)
    for c in calls:
        if not c.probed or c.cardinality_attack:
            continue
        if rule.service not in ("*", c.service):
            continue
        if rule.route not in (None, "*", c.route):
            continue
        route = "*" if rule.route is None else c.route
        end = c.intended_at + c.latency_ms / 1000.0
        error, timeout = float(c.outcome != "ok"), float(c.outcome == "timeout")
        rows[(c.service, route)].append((end, c.latency_ms, error, timeout))
    series: dict[Target, tuple[Any, Any]] = {}
    for target, items in rows.items():
        items.sort()
        array = np.asarray(items, dtype=float)
        series[target] = (array[:, 0], array[:, 1:])
    return series


def _breach(rule: SloRule, ends: Any, values: Any, t: float) -> tuple[int, dict[str, Any] | None]:
    """(1 if some pair had enough calls in both views, the first breaching pair or None)."""
    judged = 0
    hi = int(np.searchsorted(ends, t, side="left"))
    for window, threshold in zip(rule.windows, rule.thresholds, strict=True):
        spans = {
            view: int(np.searchsorted(ends, t - VIEW_SECONDS[view], side="left"))
            for view in (window.short, window.long)
        }
        if any(hi - lo < rule.min_requests for lo in spans.values()):
            continue
        judged = 1
        seen: dict[str, float] = {}
        for view, lo in spans.items():  # the short view first: it clears most seconds cheaply
            seen[view] = _value(rule, values[lo:hi])
            if seen[view] <= threshold:
                break
        else:
            pair = f"{window.long}/{window.short}"
            return 1, {"views": pair, "value": seen[window.long], "threshold": threshold}
    return judged, None


def _value(rule: SloRule, rows: Any) -> float:
    if rule.kind == "latency_p99":
        return float(np.quantile(rows[:, 0], 0.99, method="inverted_cdf"))
    column = 1 if rule.kind == "error_rate" else 2
    return float(rows[:, column].mean())


def _hits(band: Band, target: Target) -> bool:
    """Every route: a fault on one route opens the upstream's circuit breaker, and the
    breaker refuses the calls of every route to that upstream (an expected consequence)."""
    return True


def _extend(
    breaches: list[dict[str, Any]],
    target: Target,
    since: float,
    t: float,
    breach: dict[str, Any],
    rule: SloRule,
) -> None:
    last = breaches[-1] if breaches else None
    if last is not None and (last["service"], last["route"]) == target and last["since"] == since:
        last["end"] = t
        last["value"] = max(last["value"], breach["value"])
        return
    breaches.append(
        {
            "service": target[0],
            "route": target[1],
            "since": since,
            "start": since + rule.for_s,
            "end": t,
            **breach,
        }
    )


def check_seed_slos(run: RawRun) -> list[dict[str, Any]]:
    """The seed's two SLOs: probe -> WebSocket delay p99 and the API's p95."""
    judge = run.plan.judge if run.plan is not None else None
    grace = judge.alert_grace_s if judge is not None else 0.0
    bands = incident_bands(run)
    pipeline = [(b.start, b.end + grace) for b in bands if b.kind in _PIPELINE_FAULTS]
    kills = [(b.start, b.end + grace) for b in bands if b.kind == "worker_kill"]
    slow = {c.client for c in run.ws_clients if c.slow}
    delays = [
        (m.received_at, m.received_at - m.ended_at)
        for m in run.ws
        if m.type == "event"
        and m.ended_at is not None
        and m.client not in slow
        # Held back by an outage: ended in it, or delivered in it or just after it (events
        # in flight when the broker stopped arrive once it is back).
        and not any(a <= m.ended_at <= z or a <= m.received_at <= z for a, z in pipeline)
    ]
    api = [
        (s.t, float(w["api_latency_ms"]))
        for s in run.samples
        for w in s.workers.values()
        if isinstance(w.get("api_latency_ms"), int | float)
        and not any(a <= s.t <= z for a, z in kills)
    ]
    return [
        _windowed(
            "ws-delay-p99",
            delays,
            0.99,
            judge.ws_delay_p99_max_s if judge else None,
            "s",
            lambda v: f"{v:.3f} s",
        ),
        _windowed(
            "api-p95",
            api,
            0.95,
            judge.api_p95_max_ms if judge else None,
            "ms",
            lambda v: f"{v:.1f} ms",
        ),
    ]


def _windowed(
    name: str,
    points: list[tuple[float, float]],
    q: float,
    bound: float | None,
    unit: str,
    say: Callable[[float], str],
) -> dict[str, Any]:
    windows: dict[int, list[float]] = defaultdict(list)
    for t, value in points:
        windows[int(t // WINDOW_S)].append(value)
    judged = {k: quantile(v, q) for k, v in sorted(windows.items()) if len(v) >= MIN_WINDOW}
    over = [(k * WINDOW_S, v) for k, v in judged.items() if v is not None and bound and v >= bound]
    row: dict[str, Any] = {
        "name": name,
        "source": "seed",
        "bound": bound,
        "unit": unit,
        "values": len(points),
        "windows_judged": len(judged),
        "whole_run": quantile([v for _, v in points], q),
        "worst_window": max((v for v in judged.values() if v is not None), default=None),
        "breaches": [{"start": t, "end": t + WINDOW_S, "value": v} for t, v in over][:FIRST],
    }
    if bound is None:
        return row | {"verdict": UNKNOWN, "detail": "no plan: no bound"}
    if over:
        t, v = over[0]
        detail = (
            f"{len(over)} of {len(judged)} 60 s windows at or over {say(bound)}; "
            f"first from t={t:.0f}: {say(v)}"
        )
        return row | {"verdict": FAIL, "detail": detail}
    if not judged:
        return row | {
            "verdict": UNKNOWN,
            "detail": f"no 60 s window with {MIN_WINDOW} values ({len(points)} in all)",
        }
    worst = row["worst_window"]
    detail = f"every one of {len(judged)} 60 s windows under {say(bound)} (worst {say(worst)})"
    return row | {"verdict": PASS, "detail": detail}
