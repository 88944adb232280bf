"""The load generator's arrival schedule: a pure, seeded function of the :class:`Plan`.

An open model: arrivals form a Poisson process whose rate is ``plan.rate_at(t)`` (piecewise
constant: warm-up at the first tier's rate, the A/B phase at ``ab_rate``, then the tiers),
from run time 0 to ``plan.load_end_s``. Each arrival draws a service (uniform), a route
(by weight) and a concrete path made from the route's template (``/users/{id}`` ->
``/users/4711``). In the A/B phase arrivals alternate between the probed client and the
unprobed baseline client, so both see the same conditions; so do they around each Kafka or
RGW outage (the control group of invariant I5).

Each ``cardinality_burst`` incident adds a Poisson stream at its ``params.rate`` per second
over its window, on never-seen paths ``/burst<k>-<n>/x`` (``n`` drawn among
``params.routes`` distinct values; ``k`` numbers the incident).

Every stream has its own :class:`random.Random` seeded from ``plan.seed`` and a stream name
(string seeds hash the same in every process), so the same plan gives the same arrivals,
in the same order, whatever the machine. The schedule is produced lazily, in time order.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
import re
from collections.abc import Iterator
from typing import Final, NamedTuple

from pipeline.campaign.profile import IncidentPlan, Plan

__all__ = [
    "BURST_PHASE",
    "Arrival",
    "BurstParams",
    "burst_params",
    "burst_rate_at",
    "iter_arrivals",
    "rate_segments",
]

BURST_PHASE: Final = "cardinality_burst"
"""The phase key under which burst arrivals are counted (their calls run in ``load``)."""
_PARAM: Final = re.compile(r"\{[^{}/]*\}")
_MAX_ID: Final = 99_999


class Arrival(NamedTuple):
    """One call to start at run time ``at_s``."""

    at_s: float
    phase: str
    """``warmup``, ``ab`` or ``load`` (the phase at ``at_s``)."""
    service: str
    route: str
    """The template the path was made from (a burst path is its own template)."""
    path: str
    probed: bool
    attack: bool = False
    """A ``cardinality_burst`` arrival."""


class BurstParams(NamedTuple):
    rate: float
    routes: int


def burst_params(incident: IncidentPlan) -> BurstParams:
    """``rate`` (> 0, per second) and ``routes`` (>= 1) of a cardinality burst, checked."""
    rate = incident.params.get("rate", 50)
    routes = incident.params.get("routes", 1000)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
        raise ValueError(f"incident {incident.id}: params.rate must be a number > 0, got {rate!r}")
    if isinstance(routes, bool) or not isinstance(routes, int) or routes < 1:
        raise ValueError(
            f"incident {incident.id}: params.routes must be an integer >= 1, got {routes!r}"
        )
    return BurstParams(float(rate), routes)


def rate_segments(plan: Plan) -> list[tuple[float, float, float]]:
    """``(start_s, end_s, rate)`` of the main stream: where ``plan.rate_at`` is constant."""
    cuts = {0.0, plan.ab_start_s, plan.load_start_s, plan.load_end_s}
    cuts.update(t.at_s for t in plan.tiers if 0.0 <= t.at_s <= plan.load_end_s)
    edges = sorted(c for c in cuts if 0.0 <= c <= plan.load_end_s)
    return [(a, b, plan.rate_at(a)) for a, b in itertools.pairwise(edges) if b > a]


def _poisson(rng: random.Random, segments: list[tuple[float, float, float]]) -> Iterator[float]:
    """Arrival times of a Poisson process, rate constant per segment. The process is
    memoryless, so starting afresh at each segment's start is exact."""
    for start, end, rate in segments:
        if rate <= 0.0:
            continue
        t = start
        while True:
            t += rng.expovariate(rate)
            if t >= end:
                break
            yield t


def _path_maker(template: str) -> tuple[str, ...]:
    """The template's literal pieces; a parameter sits between two consecutive ones."""
    return tuple(_PARAM.split(template))


def _main_stream(plan: Plan) -> Iterator[Arrival]:
    rng = random.Random(f"{plan.seed}:arrivals")  # noqa: S311 - a reproducible schedule
    services = plan.services
    templates = [r.template for r in plan.routes]
    pieces = [_path_maker(t) for t in templates]
    cumulative = list(itertools.accumulate(r.weight for r in plan.routes))
    total = cumulative[-1] if cumulative else 0.0
    if not services or total <= 0.0:
        return
    ab_index = 0
    control = _control_windows(plan)
    for at in _poisson(rng, rate_segments(plan)):
        service = services[rng.randrange(len(services))]
        index = min(bisect.bisect_right(cumulative, rng.random() * total), len(templates) - 1)
        parts = pieces[index]
        path = parts[0]
        for literal in parts[1:]:
            path += f"{rng.randint(1, _MAX_ID)}{literal}"
        phase = plan.phase_at(at)
        probed = True
        if phase == "ab" or any(a <= at < z for a, z in control):
            probed = ab_index % 2 == 0
            ab_index += 1
        yield Arrival(at, phase, service, templates[index], path, probed)


def _control_windows(plan: Plan) -> list[tuple[float, float]]:
    """Around each Kafka or RGW outage (the outage and as long before it), arrivals
    alternate between the probed client and an unprobed control client, as in the A/B
    phase: I5 compares both groups under the same machine load, which a single-machine
    outage (a broker restarting on the same cores) disturbs for every caller alike."""
    return [
        (i.start_s - (i.end_s - i.start_s), i.end_s)
        for i in plan.incidents
        if i.kind in ("kafka_down", "rgw_down")
    ]


def _burst_stream(plan: Plan, number: int, incident: IncidentPlan) -> Iterator[Arrival]:
    params = burst_params(incident)
    rng = random.Random(f"{plan.seed}:burst:{incident.id}")  # noqa: S311 - reproducible
    services = plan.services
    end = min(incident.end_s, plan.load_end_s)
    for at in _poisson(rng, [(incident.start_s, end, params.rate)]):
        service = services[rng.randrange(len(services))]
        path = f"/burst{number}-{rng.randrange(params.routes)}/x"
        yield Arrival(at, plan.phase_at(at), service, path, path, True, True)


def iter_arrivals(plan: Plan) -> Iterator[Arrival]:
    """Every arrival of the run, in time order (ties: main stream first). Raises
    ``ValueError`` up front for a burst incident with bad params."""
    bursts = [i for i in plan.incidents if i.kind == "cardinality_burst"]
    for incident in bursts:
        burst_params(incident)
    streams = [_main_stream(plan)]
    streams += [_burst_stream(plan, n, i) for n, i in enumerate(bursts, start=1)]
    return heapq.merge(*streams, key=lambda a: a.at_s)


def burst_rate_at(plan: Plan, t: float) -> float:
    """The summed rate of the cardinality bursts active at run time ``t``."""
    return sum(
        burst_params(i).rate
        for i in plan.incidents
        if i.kind == "cardinality_burst" and i.start_s <= t < i.end_s
    )
