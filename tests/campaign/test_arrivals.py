"""The load generator's arrival schedule: deterministic, Poisson at the plan's rates."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.campaign._arrivals import (
    BURST_PHASE,
    Arrival,
    burst_rate_at,
    iter_arrivals,
    rate_segments,
)
from pipeline.campaign.profile import IncidentPlan, Plan, parse_plan
from pipeline.probe.routes import compile_template

PROFILE = """
version = 1
name = "arrivals"
seed = {seed}
duration_s = {load_s}
[load]
warmup_s = {warmup_s}
ab_phase_s = {ab_s}
ab_rate = {ab_rate}
drain_s = 1
max_in_flight = 50
tiers = [{{ at = 0, rate = {rate} }}, {{ at = {tier2_at}, rate = {rate2} }}]
[services]
count = 3
prefix = "svc"
routes = [
  {{ template = "/users/{{id}}", weight = 5 }},
  {{ template = "/orders/{{id}}/items/{{item}}", weight = 3 }},
  {{ template = "/search", weight = 2 }},
]
"""


def make_plan(
    *,
    seed: int = 1,
    warmup_s: float = 2,
    ab_s: float = 4,
    ab_rate: float = 30,
    load_s: float = 10,
    rate: float = 40,
    tier2_at: float = 5,
    rate2: float = 80,
) -> Plan:
    return parse_plan(
        PROFILE.format(
            seed=seed,
            warmup_s=warmup_s,
            ab_s=ab_s,
            ab_rate=ab_rate,
            load_s=load_s,
            rate=rate,
            tier2_at=tier2_at,
            rate2=rate2,
        )
    )


def with_burst(plan: Plan, start_s: float, end_s: float, **params: object) -> Plan:
    burst = IncidentPlan(
        id="01-cardinality_burst",
        kind="cardinality_burst",
        start_s=start_s,
        end_s=end_s,
        params=params,
    )
    return dataclasses.replace(plan, incidents=(burst,))


def schedule(plan: Plan) -> list[Arrival]:
    return list(iter_arrivals(plan))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**40), rate=st.floats(1, 200))
def test_same_plan_gives_the_same_schedule(seed: int, rate: float) -> None:
    plan = make_plan(seed=seed, rate=rate, load_s=3, warmup_s=1, ab_s=1)
    first = schedule(plan)
    assert first == schedule(plan)
    times = [a.at_s for a in first]
    assert times == sorted(times)
    assert all(0.0 <= t < plan.load_end_s for t in times)


def test_another_seed_gives_another_schedule() -> None:
    assert schedule(make_plan(seed=1)) != schedule(make_plan(seed=2))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**40), rate=st.floats(5, 300))
def test_count_in_a_window_is_poisson_at_the_plan_rate(seed: int, rate: float) -> None:
    plan = make_plan(seed=seed, rate=rate, rate2=rate, load_s=20, warmup_s=0, ab_s=0)
    arrivals = schedule(plan)
    expected = rate * plan.load_s
    # A Poisson count is within 5 standard deviations of its mean but once in ~3.5 million.
    assert abs(len(arrivals) - expected) <= 5 * math.sqrt(expected) + 1
    gaps = [b.at_s - a.at_s for a, b in zip(arrivals, arrivals[1:], strict=False)]
    mean_gap = sum(gaps) / len(gaps)
    assert mean_gap == pytest.approx(1 / rate, rel=0.25)


def test_rates_follow_the_phases_and_tiers() -> None:
    plan = make_plan(warmup_s=20, ab_s=20, ab_rate=30, rate=50, tier2_at=20, rate2=150, load_s=40)
    segments = rate_segments(plan)
    assert segments == [
        (0.0, 20.0, 50.0),
        (20.0, 40.0, 30.0),
        (40.0, 60.0, 50.0),
        (60.0, 80.0, 150.0),
    ]
    arrivals = schedule(plan)
    for start, end, rate in segments:
        count = sum(1 for a in arrivals if start <= a.at_s < end)
        expected = rate * (end - start)
        assert abs(count - expected) <= 5 * math.sqrt(expected)
        assert {a.phase for a in arrivals if start <= a.at_s < end} == {plan.phase_at(start)}


def test_ab_phase_alternates_probed_and_baseline() -> None:
    plan = make_plan()
    ab = [a for a in schedule(plan) if a.phase == "ab"]
    assert len(ab) > 20
    assert [a.probed for a in ab] == [i % 2 == 0 for i in range(len(ab))]
    assert all(a.probed for a in schedule(plan) if a.phase != "ab")


def test_services_routes_and_paths() -> None:
    plan = make_plan(load_s=30)
    arrivals = schedule(plan)
    assert {a.service for a in arrivals} == set(plan.services)
    counts = {r.template: 0 for r in plan.routes}
    for arrival in arrivals:
        assert compile_template(arrival.route).fullmatch(arrival.path), arrival
        assert "{" not in arrival.path
        counts[arrival.route] += 1
    total = len(arrivals)
    assert counts["/users/{id}"] / total == pytest.approx(0.5, abs=0.06)
    assert counts["/search"] / total == pytest.approx(0.2, abs=0.06)
    assert len({a.path for a in arrivals if a.route == "/users/{id}"}) > 100


def test_cardinality_burst_adds_never_seen_paths_at_its_rate() -> None:
    plan = with_burst(make_plan(load_s=20), 10.0, 20.0, routes=300, rate=60)
    arrivals = schedule(plan)
    attack = [a for a in arrivals if a.attack]
    assert abs(len(attack) - 600) <= 5 * math.sqrt(600)
    assert all(10.0 <= a.at_s < 20.0 and a.phase == "load" and a.probed for a in attack)
    assert all(re.fullmatch(r"/burst1-\d+/x", a.path) and a.route == a.path for a in attack)
    distinct = {a.path for a in attack}
    assert 200 < len(distinct) <= 300
    assert not distinct & {a.path for a in arrivals if not a.attack}
    assert burst_rate_at(plan, 15.0) == 60.0 and burst_rate_at(plan, 9.0) == 0.0
    # The burst does not shift the main stream: same seed, same main arrivals.
    assert [a for a in arrivals if not a.attack] == schedule(make_plan(load_s=20))
    assert BURST_PHASE == "cardinality_burst"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rate": 0}, "params.rate must be a number > 0"),
        ({"rate": "fast"}, "params.rate must be a number > 0"),
        ({"routes": 0}, "params.routes must be an integer >= 1"),
        ({"routes": 2.5}, "params.routes must be an integer >= 1"),
    ],
)
def test_bad_burst_params_are_refused_up_front(params: dict[str, object], message: str) -> None:
    plan = with_burst(make_plan(), 7.0, 9.0, **params)
    with pytest.raises(ValueError, match=f"incident 01-cardinality_burst: {re.escape(message)}"):
        iter_arrivals(plan)
