"""SLO alerting: rules file, burn-rate conditions, the alert state machine, alert records."""

from __future__ import annotations

import dataclasses
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tables.alerting import (
    AlertEngine,
    AlertRecord,
    InvalidAlert,
    Observed,
    alert_id,
    decode_alert,
    encode_alert,
)
from tables.slo import Target, WindowStatsLike, assess, burn_rate, index_stats, watches
from tables.slo_rules import (
    DEFAULT_RULES_FILE,
    SloConfigError,
    SloRule,
    load_rules,
    parse_rules,
    rules_from_mapping,
)

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_764_000_000.0
TRACE_A = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_B = "0af7651916cd43dd8448eb211c80319c"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
PAY = Target("checkout", "/pay", "POST")


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Stats:
    """A synthetic WindowStats (the shape tables/query.py produces)."""

    service: str
    route: str
    method: str
    view: str
    start: float
    end: float
    requests: int
    errors: int = 0
    error_rate: float = 0.0
    timeouts: int = 0
    timeout_rate: float = 0.0
    p99_ms: float | None = None
    example_trace_ids: tuple[str, ...] = (TRACE_A, TRACE_B)


_SECONDS = {"10s": 10, "1m": 60, "5m": 300}


def stat(
    view: str,
    *,
    target: Target = PAY,
    requests: int = 100,
    p99: float | None = None,
    error_rate: float = 0.0,
    timeout_rate: float = 0.0,
    traces: tuple[str, ...] = (TRACE_A, TRACE_B),
    end: float = T0,
) -> Stats:
    errors, timeouts = round(error_rate * requests), round(timeout_rate * requests)
    return Stats(
        *target,
        view=view,
        start=end - _SECONDS[view],
        end=end,
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else 0.0,
        timeouts=timeouts,
        timeout_rate=timeouts / requests if requests else 0.0,
        p99_ms=p99,
        example_trace_ids=traces,
    )


def latency(long: float, short: float, **kw: Any) -> list[Stats]:
    return [stat("5m", p99=long, **kw), stat("1m", p99=short, **kw)]


def errors(long: float, short: float, **kw: Any) -> list[Stats]:
    return [
        stat("5m", error_rate=long, requests=1000, **kw),
        stat("1m", error_rate=short, requests=1000, **kw),
    ]


def latency_rule(**overrides: Any) -> dict[str, Any]:
    rule = {
        "name": "checkout-p99",
        "service": "checkout",
        "route": "*",
        "kind": "latency_p99",
        "threshold_ms": 1000,
        "windows": [{"long": "5m", "short": "1m"}],
        "min_requests": 20,
        "severity": "page",
    }
    rule.update(overrides)
    return rule


def error_rule(**overrides: Any) -> dict[str, Any]:
    rule = {
        "name": "checkout-errors",
        "service": "checkout",
        "route": "*",
        "kind": "error_rate",
        "objective": 0.99,
        "windows": [{"long": "5m", "short": "1m", "burn_rate": 14.4}],
        "min_requests": 20,
        "severity": "page",
    }
    rule.update(overrides)
    return rule


def rules(*raw: dict[str, Any]) -> tuple[SloRule, ...]:
    return rules_from_mapping({"version": 1, "rule": list(raw)}, source="test.toml")


def engine(*raw: dict[str, Any], **kw: Any) -> tuple[AlertEngine, FakeClock]:
    clock = FakeClock()
    return AlertEngine(rules(*raw), clock=clock, rng=random.Random(7), **kw), clock


def run(eng: AlertEngine, clock: FakeClock, stats: list[Stats], steps: int, every: float = 10):
    """Evaluate ``steps`` times, ``every`` seconds apart; the clock ends one tick past."""
    out: list[AlertRecord] = []
    for _ in range(steps):
        out += eng.evaluate(stats)
        clock.tick(every)
    return out


# --- the state machine -------------------------------------------------------------------


def test_latency_spike_fires_once_after_for_s() -> None:
    eng, clock = engine(latency_rule(for_s=60))
    assert run(eng, clock, latency(1500, 1600), steps=6) == []  # t = 0 .. 50: pending
    (record,) = run(eng, clock, latency(1500, 1600), steps=1)  # t = 60
    assert run(eng, clock, latency(1500, 1600), steps=30) == []  # dedup while firing

    assert record.status == "firing"
    assert (record.rule, record.kind, record.severity) == ("checkout-p99", "latency_p99", "page")
    assert (record.service, record.route, record.method) == PAY
    assert (record.started_at, record.fired_at, record.resolved_at) == (T0, T0 + 60, None)
    assert record.threshold == 1000 and record.views == ("5m", "1m")
    assert record.observed == Observed(value=1500, by_view={"1m": 1600, "5m": 1500})
    assert record.burn_rate is None and record.objective is None
    assert record.example_trace_ids == (TRACE_A, TRACE_B)
    assert record.trace_id == TRACE_A
    assert HEX16.match(record.request_id)
    assert record.alert_id == alert_id("checkout-p99", PAY, T0)
    assert record.message == (
        "FIRING [page] checkout-p99: checkout POST /pay: p99 1500 ms on 5m "
        "(threshold 1000 ms on 5m and 1m)"
    )


def test_for_s_zero_fires_on_first_evaluation() -> None:
    eng, clock = engine(latency_rule())
    (record,) = eng.evaluate(latency(1500, 1600))
    assert record.started_at == record.fired_at == T0


def test_pending_breach_that_clears_before_for_s_never_fires() -> None:
    eng, clock = engine(latency_rule(for_s=30))
    for _ in range(20):  # 20 s over, 10 s under: never 30 s in a row
        assert run(eng, clock, latency(1500, 1500), steps=2) == []
        assert run(eng, clock, latency(1500, 900), steps=1) == []
        assert eng.tracked == 0


def test_no_alert_under_min_requests() -> None:
    eng, clock = engine(latency_rule(), error_rule())
    few = [
        stat("5m", p99=9000, error_rate=1.0, requests=3),
        stat("1m", p99=9000, error_rate=1.0, requests=3),
    ]
    assert run(eng, clock, few, steps=50) == []
    assert eng.tracked == 0


def test_min_requests_applies_to_each_view() -> None:
    eng, clock = engine(latency_rule())
    mixed = [stat("5m", p99=5000, requests=500), stat("1m", p99=5000, requests=19)]
    assert run(eng, clock, mixed, steps=10) == []


@pytest.mark.parametrize(
    ("long", "short"),
    [(800, 5000), (5000, 800), (1000, 5000)],
    ids=["short-blip", "long-only-recovering", "long-at-threshold"],
)
def test_one_view_over_threshold_does_not_fire(long: float, short: float) -> None:
    eng, clock = engine(latency_rule())
    assert run(eng, clock, latency(long, short), steps=30) == []


def test_resolves_only_after_resolve_after_s_of_clear() -> None:
    eng, clock = engine(latency_rule(resolve_after_s=120))
    (fired,) = run(eng, clock, latency(1500, 1500), steps=3)
    clear_from = clock.now
    assert run(eng, clock, latency(1500, 500), steps=12) == []  # clear for 0 .. 110 s
    (resolved,) = run(eng, clock, latency(1500, 500), steps=1)  # clear for 120 s
    assert run(eng, clock, latency(1500, 500), steps=10) == []

    assert resolved.status == "resolved"
    assert resolved.resolved_at == clear_from + 120 == resolved.evaluated_at
    assert (resolved.alert_id, resolved.trace_id) == (fired.alert_id, fired.trace_id)
    assert (resolved.started_at, resolved.fired_at) == (fired.started_at, fired.fired_at)
    assert resolved.request_id != fired.request_id
    assert resolved.observed.value == 1500  # the long view, still high: the short one cleared
    assert resolved.message.startswith("RESOLVED [page] checkout-p99: checkout POST /pay")
    assert resolved.message.endswith("after 2m30s")
    assert eng.tracked == 0


def test_flapping_inside_the_hysteresis_band_emits_nothing() -> None:
    eng, clock = engine(latency_rule(resolve_after_s=60, resolve_ratio=0.8))
    assert len(run(eng, clock, latency(1200, 1200), steps=1)) == 1
    for value in [900, 1100, 850, 1300, 810, 1000, 950] * 5:  # above 800: holds
        assert run(eng, clock, latency(value, value), steps=1) == []
    for _ in range(5):  # dips under 800 shorter than resolve_after_s, then back in the band
        assert run(eng, clock, latency(700, 700), steps=5) == []
        assert run(eng, clock, latency(900, 900), steps=1) == []
    assert len(eng.firing()) == 1
    (resolved,) = run(eng, clock, latency(790, 790), steps=7)
    assert resolved.status == "resolved"


def test_a_new_breach_after_resolution_is_a_new_episode() -> None:
    eng, clock = engine(latency_rule())
    first = run(eng, clock, latency(1500, 1500), steps=1)
    first += run(eng, clock, latency(100, 100), steps=1)
    second = run(eng, clock, latency(1500, 1500), steps=1)
    assert [r.status for r in first + second] == ["firing", "resolved", "firing"]
    assert second[0].alert_id != first[0].alert_id
    assert second[0].alert_id == alert_id("checkout-p99", PAY, T0 + 20)


def test_missing_data_counts_as_clear_and_resolves() -> None:
    eng, clock = engine(latency_rule(resolve_after_s=30))
    run(eng, clock, latency(1500, 1500), steps=1)
    records = run(eng, clock, [], steps=5)
    assert [(r.status, r.observed) for r in records] == [
        ("resolved", Observed(value=None, by_view={}))
    ]
    assert "p99: no data on 5m" in records[0].message


def test_still_firing_reminders_are_opt_in() -> None:
    eng, clock = engine(latency_rule(), remind_every_s=300)
    records = run(eng, clock, latency(1500, 1500), steps=70, every=10)  # 0 .. 690 s
    records += run(eng, clock, latency(10, 10), steps=1)
    assert [(r.status, r.evaluated_at - T0) for r in records] == [
        ("firing", 0),
        ("still_firing", 300),
        ("still_firing", 600),
        ("resolved", 700),
    ]
    assert len({(r.alert_id, r.trace_id) for r in records}) == 1
    assert len({r.request_id for r in records}) == 4


def test_trace_id_is_fresh_when_the_stats_have_no_valid_example() -> None:
    eng, clock = engine(latency_rule())
    (record,) = eng.evaluate(latency(1500, 1500, traces=("XYZ", "0" * 32, TRACE_A.upper())))
    assert record.example_trace_ids == ()
    assert HEX32.match(record.trace_id) and record.trace_id != "0" * 32


def test_examples_come_from_the_short_view_first() -> None:
    stats = [stat("5m", p99=1500, traces=(TRACE_A,)), stat("1m", p99=1500, traces=(TRACE_B,))]
    eng, clock = engine(latency_rule())
    (record,) = eng.evaluate(stats)
    assert record.example_trace_ids == (TRACE_B, TRACE_A) and record.trace_id == TRACE_B


# --- burn rates --------------------------------------------------------------------------


def test_burn_rate_formula() -> None:
    assert burn_rate(0.02, 0.99) == pytest.approx(2.0)
    assert burn_rate(0.144, 0.99) == pytest.approx(14.4)
    assert burn_rate(0.0036, 0.999) == pytest.approx(3.6)
    assert burn_rate(0.0, 0.995) == 0.0


def test_error_rate_burn_against_hand_computed_values() -> None:
    # budget 1%: 14.4x means more than 14.4% errors on both views.
    eng, clock = engine(error_rule())
    assert run(eng, clock, errors(0.14, 0.30), steps=5) == []  # 5m burns 14.0x: not enough
    (record,) = run(eng, clock, errors(0.20, 0.30), steps=1)
    assert record.threshold == pytest.approx(0.144)
    assert record.objective == 0.99
    assert record.observed.value == pytest.approx(0.20)
    assert record.burn_rate == pytest.approx(20.0)
    assert record.observed.by_view == pytest.approx({"5m": 0.20, "1m": 0.30})
    assert "error rate 20% (burn 20x) on 5m (threshold 14.4% = 14.4x the 1% budget" in (
        record.message
    )


def test_timeout_rate_fast_and_slow_burn() -> None:
    # budget 0.5%: 5% timeouts burn 10x, over the 6x ticket but under the 14.4x page.
    page = error_rule(name="page", kind="timeout_rate", objective=0.995)
    ticket = error_rule(
        name="ticket",
        kind="timeout_rate",
        objective=0.995,
        severity="ticket",
        windows=[{"long": "5m", "short": "1m", "burn_rate": 6.0}],
    )
    eng, clock = engine(page, ticket)
    stats = [
        stat("5m", timeout_rate=0.05, requests=1000),
        stat("1m", timeout_rate=0.05, requests=1000),
    ]
    (record,) = eng.evaluate(stats)
    assert (record.rule, record.severity) == ("ticket", "ticket")
    assert record.burn_rate == pytest.approx(10.0)
    assert record.threshold == pytest.approx(0.03)


def test_any_window_pair_can_fire_and_is_reported() -> None:
    rule = error_rule(
        windows=[
            {"long": "5m", "short": "1m", "burn_rate": 14.4},
            {"long": "1m", "short": "10s", "burn_rate": 30},
        ]
    )
    eng, clock = engine(rule)
    stats = [
        stat("5m", error_rate=0.05, requests=1000),
        stat("1m", error_rate=0.40, requests=1000),
        stat("10s", error_rate=0.50, requests=100),
    ]
    (record,) = eng.evaluate(stats)
    assert record.views == ("1m", "10s")
    assert record.threshold == pytest.approx(0.30)
    assert record.burn_rate == pytest.approx(40.0)


def test_hold_threshold_is_scaled_by_resolve_ratio() -> None:
    (rule,) = rules(error_rule(resolve_ratio=0.5))
    views = index_stats(errors(0.10, 0.10))[PAY]
    assert not assess(rule, views, holding=False).breached  # 0.10 <= 0.144
    assert assess(rule, views, holding=True).breached  # 0.10 > 0.072


# --- targets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "target", "expected"),
    [
        ({"route": None}, Target("checkout", "*", "*"), True),
        ({"route": None}, PAY, False),
        ({"route": "*"}, PAY, True),
        ({"route": "*"}, Target("checkout", "*", "*"), False),
        ({"route": "/pay"}, PAY, True),
        ({"route": "/pay"}, Target("checkout", "/cart", "POST"), False),
        ({"route": "/pay", "method": "GET"}, PAY, False),
        ({"route": "/pay", "method": "POST"}, PAY, True),
        ({"route": "*"}, Target("checkout", "/pay", "*"), False),
        ({"route": "*", "method": "*"}, Target("checkout", "/pay", "*"), True),
        ({"route": "/pay", "method": "*"}, PAY, False),
        ({"route": "*"}, Target("billing", "/pay", "POST"), False),
        ({"route": "*", "service": "*"}, Target("billing", "/pay", "POST"), True),
    ],
)
def test_which_targets_a_rule_watches(
    overrides: dict[str, Any], target: Target, expected: bool
) -> None:
    raw = latency_rule(**overrides)
    raw = {key: value for key, value in raw.items() if value is not None}
    (rule,) = rules(raw)
    assert watches(rule, target) is expected


def test_per_route_and_rollup_rules_fire_separately() -> None:
    rollup = Target("checkout", "*", "*")
    cart = Target("checkout", "/cart", "GET")
    per_route = latency_rule(name="per-route")
    per_service = latency_rule(name="per-service")
    del per_service["route"]
    eng, clock = engine(per_route, per_service)
    stats = [*latency(1500, 1500), *latency(1500, 1500, target=cart)]
    stats += latency(1200, 1200, target=rollup)
    stats += latency(5000, 5000, target=Target("billing", "*", "*"))  # another service
    records = eng.evaluate(stats)
    assert [(r.rule, r.service, r.route, r.method) for r in records] == [
        ("per-route", "checkout", "/cart", "GET"),
        ("per-route", "checkout", "/pay", "POST"),
        ("per-service", "checkout", "*", "*"),
    ]
    assert len({r.alert_id for r in records}) == 3
    assert records[2].message.startswith("FIRING [page] per-service: checkout (all routes): ")


def test_index_stats_keeps_the_latest_window_per_view() -> None:
    old, new = stat("1m", p99=10, end=T0 - 60), stat("1m", p99=20, end=T0)
    assert index_stats([new, old])[PAY]["1m"] is new
    assert index_stats([old, new])[PAY]["1m"] is new


# --- bounds ------------------------------------------------------------------------------


def test_tracked_states_are_bounded_and_overflow_is_counted() -> None:
    eng, clock = engine(latency_rule(for_s=20, resolve_after_s=10), max_active=3)
    targets = [Target("checkout", f"/r{i}", "GET") for i in range(5)]
    hot = [s for t in targets for s in latency(1500, 1500, target=t)]
    assert eng.evaluate(hot) == []
    assert (eng.tracked, eng.overflow_total) == (3, 2)
    clock.tick(20)
    fired = eng.evaluate(hot)
    assert [r.route for r in fired] == ["/r0", "/r1", "/r2"]  # the first tracked, never evicted
    assert (eng.tracked, eng.overflow_total) == (3, 4)
    # once the first three resolve, the others get their turn
    cold = [s for t in targets[:3] for s in latency(10, 10, target=t)] + hot[6:]
    clock.tick(10)
    assert eng.evaluate(cold) == []  # t=30: /r0../r2 resolving, /r3 /r4 still overflow
    clock.tick(10)
    resolved = eng.evaluate(cold)  # t=40: resolved; /r3 /r4 now pending
    assert [(r.status, r.route) for r in resolved] == [("resolved", f"/r{i}") for i in range(3)]
    assert (eng.tracked, eng.overflow_total) == (2, 6)
    clock.tick(20)
    assert [r.route for r in eng.evaluate(cold)] == ["/r3", "/r4"]
    assert {r.route for r in eng.firing()} == {"/r3", "/r4"}


def test_engine_rejects_bad_arguments() -> None:
    with pytest.raises(SloConfigError, match="duplicate rule names: checkout-p99$"):
        AlertEngine(rules(latency_rule()) * 2)
    with pytest.raises(ValueError, match="max_active"):
        AlertEngine(rules(latency_rule()), max_active=0)
    with pytest.raises(ValueError, match="remind_every_s"):
        AlertEngine(rules(latency_rule()), remind_every_s=0)


# --- the rules file ----------------------------------------------------------------------


def _without(rule: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in rule.items() if k != key}


def _win(**kw: Any) -> dict[str, Any]:
    return error_rule(windows=[{"long": "5m", "short": "1m", "burn_rate": 14.4, **kw}])


_E = "test.toml: rule 'checkout-errors': "
_L = "test.toml: rule 'checkout-p99': "

CONFIG_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("missing kind", {"rule": [_without(latency_rule(), "kind")]}, _L + "missing field 'kind'"),
    (
        "missing name",
        {"rule": [_without(latency_rule(), "name")]},
        "test.toml: rule #1: missing field 'name'",
    ),
    (
        "missing severity",
        {"rule": [_without(error_rule(), "severity")]},
        _E + "missing field 'severity'",
    ),
    (
        "missing threshold",
        {"rule": [_without(latency_rule(), "threshold_ms")]},
        _L + "missing field 'threshold_ms'",
    ),
    (
        "missing objective",
        {"rule": [_without(error_rule(), "objective")]},
        _E + "missing field 'objective'",
    ),
    (
        "missing windows",
        {"rule": [_without(error_rule(), "windows")]},
        _E + "missing field 'windows'",
    ),
    (
        "missing burn_rate",
        {"rule": [error_rule(windows=[{"long": "5m", "short": "1m"}])]},
        _E + "windows[0]: missing field 'burn_rate'",
    ),
    (
        "unknown kind",
        {"rule": [latency_rule(kind="p95")]},
        _L + "kind must be one of latency_p99, error_rate, timeout_rate, got 'p95'",
    ),
    (
        "unknown severity",
        {"rule": [error_rule(severity="sms")]},
        _E + "severity must be one of page, ticket, got 'sms'",
    ),
    (
        "negative threshold",
        {"rule": [latency_rule(threshold_ms=-5)]},
        _L + "threshold_ms must be > 0",
    ),
    ("zero threshold", {"rule": [latency_rule(threshold_ms=0)]}, _L + "threshold_ms must be > 0"),
    (
        "string threshold",
        {"rule": [latency_rule(threshold_ms="300")]},
        _L + "threshold_ms must be a number, got '300'",
    ),
    (
        "bool threshold",
        {"rule": [latency_rule(threshold_ms=True)]},
        _L + "threshold_ms must be a number, got True",
    ),
    (
        "nan threshold",
        {"rule": [latency_rule(threshold_ms=float("nan"))]},
        _L + "threshold_ms must be a number, got nan",
    ),
    ("objective 1", {"rule": [error_rule(objective=1)]}, _E + "objective must be < 1"),
    ("objective 0", {"rule": [error_rule(objective=0.0)]}, _E + "objective must be > 0"),
    (
        "float min_requests",
        {"rule": [error_rule(min_requests=2.5)]},
        _E + "min_requests must be an integer, got 2.5",
    ),
    ("zero min_requests", {"rule": [error_rule(min_requests=0)]}, _E + "min_requests must be >= 1"),
    ("negative for_s", {"rule": [error_rule(for_s=-1)]}, _E + "for_s must be >= 0"),
    (
        "negative resolve_after_s",
        {"rule": [error_rule(resolve_after_s=-0.5)]},
        _E + "resolve_after_s must be >= 0",
    ),
    (
        "resolve_ratio > 1",
        {"rule": [error_rule(resolve_ratio=1.5)]},
        _E + "resolve_ratio must be <= 1",
    ),
    (
        "zero burn_rate",
        {"rule": [_win(burn_rate=0)]},
        _E + "windows[0].burn_rate must be a number > 0, got 0",
    ),
    (
        "burn over 100%",
        {"rule": [_win(burn_rate=150)]},
        _E + "windows[0].burn_rate x budget must be < 1 (a rate cannot exceed 1), got 150 x 0.01",
    ),
    (
        "burn_rate on latency",
        {"rule": [latency_rule(windows=[{"long": "5m", "short": "1m", "burn_rate": 2}])]},
        _L + "windows[0].burn_rate: latency_p99 uses threshold_ms",
    ),
    (
        "objective on latency",
        {"rule": [latency_rule(objective=0.99)]},
        _L + "objective is not allowed: latency_p99 uses threshold_ms, not objective",
    ),
    (
        "threshold on rate",
        {"rule": [error_rule(threshold_ms=5)]},
        _E + "threshold_ms is not allowed: error_rate uses objective, not threshold_ms",
    ),
    (
        "unknown view",
        {"rule": [_win(long="15m")]},
        _E + "windows[0].long must be one of 10s, 1m, 5m, got '15m'",
    ),
    (
        "inverted views",
        {"rule": [_win(long="1m", short="5m")]},
        _E + "windows[0]: long view '1m' must be longer than short '5m'",
    ),
    (
        "empty windows",
        {"rule": [error_rule(windows=[])]},
        _E + "windows must be a non-empty array of {long, short} tables",
    ),
    ("unknown rule key", {"rule": [latency_rule(threshold=5)]}, _L + "unknown field 'threshold'"),
    ("unknown window key", {"rule": [_win(factor=2)]}, _E + "windows[0]: unknown field 'factor'"),
    ("unknown top-level key", {"rules": []}, "test.toml: unknown top-level key 'rules'"),
    (
        "bad route",
        {"rule": [latency_rule(route="pay")]},
        _L + "route must be '*' or start with '/', got 'pay'",
    ),
    (
        "bad service",
        {"rule": [latency_rule(service="a b")]},
        _L + "service must be '*' or a service name, got 'a b'",
    ),
    (
        "method on rollup",
        {"rule": [_without(latency_rule(method="GET"), "route")]},
        _L + "method needs a route (the rollup has no method)",
    ),
    (
        "bad method",
        {"rule": [latency_rule(method="get")]},
        _L + "method must be '*' or an HTTP method, got 'get'",
    ),
    (
        "duplicate name",
        {"rule": [latency_rule(), latency_rule()]},
        _L + "duplicate rule name",
    ),
    ("rule not a table", {"rule": ["x"]}, "test.toml: rule #1: must be a table"),
]


@pytest.mark.parametrize(
    ("document", "expected"),
    [pytest.param(doc, msg, id=case) for case, doc, msg in CONFIG_ERRORS],
)
def test_config_errors_name_file_rule_and_field(document: dict[str, Any], expected: str) -> None:
    with pytest.raises(SloConfigError) as caught:
        rules_from_mapping({"version": 1, **document}, source="test.toml")
    assert str(caught.value) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version = 2\n", "r.toml: unsupported version 2 (expected 1)"),
        ('version = "1"\n', "r.toml: unsupported version '1' (expected 1)"),
        ("[[rule]]\nname = 'x'\n", "r.toml: missing top-level 'version' (expected 1)"),
        ("version = 1\nrule = 3\n", "r.toml: 'rule' must be an array of tables ([[rule]])"),
    ],
)
def test_version_errors(text: str, expected: str) -> None:
    with pytest.raises(SloConfigError) as caught:
        parse_rules(text, source="r.toml")
    assert str(caught.value) == expected


def test_toml_syntax_and_missing_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SloConfigError, match=r"^r\.toml: invalid TOML: "):
        parse_rules("version = = 1", source="r.toml")
    missing = tmp_path / "nope.toml"
    with pytest.raises(SloConfigError, match=rf"^{re.escape(str(missing))}: cannot read"):
        load_rules(missing)


def test_a_file_round_trips_through_toml(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        "version = 1\n"
        "[[rule]]\n"
        'name = "checkout-p99"\n'
        'service = "checkout"\n'
        'route = "/pay"\n'
        'method = "POST"\n'
        'kind = "latency_p99"\n'
        "threshold_ms = 300\n"
        'windows = [{ long = "5m", short = "1m" }, { long = "1m", short = "10s" }]\n'
        'severity = "page"\n'
    )
    (rule,) = load_rules(path)
    assert (rule.route, rule.method, rule.threshold_ms, len(rule.windows)) == (
        "/pay",
        "POST",
        300.0,
        2,
    )
    assert (rule.min_requests, rule.for_s, rule.resolve_after_s, rule.resolve_ratio) == (
        20,
        0,
        0,
        1,
    )
    path.write_text(path.read_text().replace("300", "-300"))
    with pytest.raises(SloConfigError, match=r"rule 'checkout-p99': threshold_ms must be > 0$"):
        load_rules(path)


def test_the_shipped_rules_file_loads() -> None:
    assert DEFAULT_RULES_FILE == ROOT / "tables" / "defaults" / "slo-rules.toml"
    shipped = {rule.name: rule for rule in load_rules()}
    assert {rule.kind for rule in shipped.values()} == {"latency_p99", "error_rate", "timeout_rate"}
    assert all(rule.service == "*" for rule in shipped.values())
    assert shipped["latency-p99"].threshold_ms == 1000
    fast, slow = shipped["error-rate-fast-burn"], shipped["error-rate-slow-burn"]
    assert fast.objective == slow.objective == 0.99
    assert [w.burn_rate for w in fast.windows + slow.windows] == [14.4, 6.0]
    assert shipped["timeout-rate-fast-burn"].objective == 0.995
    AlertEngine(shipped.values())


def test_docs_cover_every_rule_and_record_field() -> None:
    doc = (ROOT / "docs" / "alerts.md").read_text()
    rule_fields = [f.name for f in dataclasses.fields(SloRule) if f.init]
    rule_fields += ["long", "short", "burn_rate", "version"]
    record_fields = [*AlertRecord.__struct_fields__, *Observed.__struct_fields__]
    missing = [name for name in rule_fields + record_fields if f"`{name}`" not in doc]
    assert missing == []


# --- records -----------------------------------------------------------------------------


def _record(**overrides: Any) -> AlertRecord:
    eng, clock = engine(error_rule())
    (record,) = eng.evaluate(errors(0.2, 0.3))
    return msgspec.structs.replace(record, **overrides)


def test_record_round_trips_and_writes_every_field() -> None:
    record = _record()
    data = encode_alert(record)
    assert decode_alert(data) == record
    assert set(msgspec.json.decode(data)) == set(AlertRecord.__struct_fields__)
    assert msgspec.json.decode(data)["resolved_at"] is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"trace_id": "XYZ"}, "trace_id"),
        ({"request_id": "abc"}, "request_id"),
        ({"schema_version": 2}, "schema_version"),
        ({"status": "pending"}, "status"),
        ({"example_trace_ids": ["nope"]}, "example_trace_ids"),
        ({"extra": 1}, "extra"),
    ],
)
def test_decode_rejects_invalid_records(change: dict[str, Any], field: str) -> None:
    raw = msgspec.json.decode(encode_alert(_record()))
    raw.update(change)
    with pytest.raises(InvalidAlert, match=field):
        decode_alert(msgspec.json.encode(raw))


def test_decode_rejects_malformed_json() -> None:
    with pytest.raises(InvalidAlert):
        decode_alert(b"{")


# --- properties --------------------------------------------------------------------------

_ROUTES = [PAY, Target("checkout", "/cart", "GET"), Target("checkout", "*", "*")]
_trace_ids = st.lists(
    st.one_of(
        st.sampled_from([TRACE_A, TRACE_B, "0" * 32, "bad"]),
        st.text("0123456789abcdef", min_size=32, max_size=32),
    ),
    max_size=3,
).map(tuple)


_LEVELS = {  # (p99 ms, error rate): under the 0.5-0.8 band, inside it, over the threshold
    "cold": (100.0, 0.0),
    "band": (900.0, 0.13),
    "hot": (1500.0, 0.2),
}


@st.composite
def _snapshots(draw: st.DrawFn) -> tuple[float, list[Stats]]:
    """One evaluation: per target a level (or no data), sometimes differing per view."""
    stats = []
    for target in _ROUTES:
        level = draw(st.sampled_from(["absent", "cold", "band", "hot", "hot", "mixed"]))
        if level == "absent":
            continue
        for view in ("5m", "1m", "10s"):
            view_level = draw(st.sampled_from(sorted(_LEVELS))) if level == "mixed" else level
            p99, error_rate = _LEVELS[view_level]
            stats.append(
                stat(
                    view,
                    target=target,
                    requests=draw(st.sampled_from([500, 500, 500, 5])),
                    p99=draw(st.sampled_from([p99, p99, p99, None])),
                    error_rate=error_rate,
                    traces=draw(_trace_ids),
                )
            )
    return draw(st.sampled_from([0.0, 5.0, 10.0, 30.0, 120.0])), stats


_rule_sets = st.tuples(
    st.sampled_from([0, 10, 30]),
    st.sampled_from([0, 20, 60]),
    st.sampled_from([0.5, 0.8, 1.0]),
    st.sampled_from([None, 40.0]),
    st.integers(1, 4),
)


@settings(max_examples=150, deadline=None)
@given(_rule_sets, st.lists(_snapshots(), max_size=40))
def test_records_alternate_per_rule_and_target(
    config: tuple[float, float, float, float | None, int],
    snapshots: list[tuple[float, list[Stats]]],
) -> None:
    for_s, resolve_after_s, ratio, remind, max_active = config
    common = {"for_s": for_s, "resolve_after_s": resolve_after_s, "resolve_ratio": ratio}
    rollup = _without(latency_rule(name="rollup", **common), "route")
    eng, clock = engine(
        latency_rule(**common),
        error_rule(**common),
        rollup,
        remind_every_s=remind,
        max_active=max_active,
    )
    history: dict[tuple[str, str, str, str], list[AlertRecord]] = defaultdict(list)
    for dt, stats in snapshots:
        clock.tick(dt)
        for record in eng.evaluate(stats):
            assert decode_alert(encode_alert(record)) == record
            assert HEX32.match(record.trace_id) and record.trace_id != "0" * 32
            assert HEX16.match(record.request_id) and record.request_id != "0" * 16
            if record.status == "firing":
                seen = {trace for item in stats for trace in item.example_trace_ids}
                assert set(record.example_trace_ids) <= seen
                assert record.trace_id == (record.example_trace_ids or (record.trace_id,))[0]
            key = (record.rule, record.service, record.route, record.method)
            history[key].append(record)
        assert eng.tracked <= max_active
    for records in history.values():
        statuses = [r.status for r in records if r.status != "still_firing"]
        assert statuses == ["firing", "resolved"] * (len(statuses) // 2) + (
            ["firing"] if len(statuses) % 2 else []
        )
        episode: AlertRecord | None = None
        for record in records:
            if record.status == "firing":
                episode = record
                assert record.resolved_at is None
                assert record.started_at <= record.fired_at
            else:
                assert episode is not None
                assert (record.alert_id, record.trace_id) == (episode.alert_id, episode.trace_id)
            if record.status == "resolved":
                assert record.resolved_at is not None
                assert record.resolved_at - record.fired_at >= 0


# --- the query side's stats --------------------------------------------------------------


def test_query_window_stats_fit_the_engine() -> None:
    """tables.query.WindowStats satisfies WindowStatsLike (mypy checks the assignment)."""
    from tables.query import WindowStats

    def real(fake: Stats) -> WindowStats:
        values: dict[str, Any] = {
            f.name: getattr(fake, f.name, 0) for f in dataclasses.fields(WindowStats)
        }
        values.update(start=int(fake.start), end=int(fake.end))
        return WindowStats(**values)

    stats: list[WindowStatsLike] = [real(s) for s in errors(0.2, 0.3)]
    eng, clock = engine(error_rule())
    (record,) = eng.evaluate(stats)
    assert record.burn_rate == pytest.approx(20.0)
    assert record.trace_id == TRACE_A
