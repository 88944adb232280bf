"""What both probe transports share: their stats view."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from pipeline.probe._core import _Core
from pipeline.probe.breaker import BreakerSnapshot
from pipeline.probe.retry import RetryBudgetSnapshot

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


@dataclass(frozen=True)
class ProbeStats:
    """A point-in-time view of one probe transport (feeds ``/v1/resilience/state``)."""

    service: str
    in_flight: dict[str, int]
    """Attempts started and not yet ended, per upstream ``host:port``."""
    in_flight_total: int
    pool_limit: int | None
    """``max_connections`` of the inner pool, when known."""
    breakers: tuple[BreakerSnapshot, ...]
    retry_budget: RetryBudgetSnapshot | None
    events_emitted: int
    internal_errors: int
    route_overflows: int
    budget_refusals: int
    retries: int
    short_circuits: int
    orphaned_responses: int
    """Responses dropped without being closed; their events were emitted on collection."""
    orphans_dropped: int
    """Such events lost because 10,000 were already waiting to be drained (a bound, I3)."""
    breaker_overflows: int
    """Lookups of an upstream past ``max_upstreams``, answered by the shared breaker."""


class _Base:
    _core: _Core

    def stats(self) -> ProbeStats:
        core = self._core
        core.drain_orphans()
        breakers = tuple(core.breakers.snapshots()) if core.breakers is not None else ()
        budget = core.budget.snapshot() if core.budget is not None else None
        overflows = core.breakers.overflow_total if core.breakers is not None else 0
        in_flight = core.in_flight()
        with core.lock:
            return ProbeStats(
                service=core.service,
                in_flight=in_flight,
                in_flight_total=sum(in_flight.values()),
                pool_limit=core.pool_limit,
                breakers=breakers,
                retry_budget=budget,
                events_emitted=core.events_emitted,
                internal_errors=core.internal_errors,
                route_overflows=core.routes.overflows,
                budget_refusals=core.budget_refusals,
                retries=core.retries,
                short_circuits=core.short_circuits,
                orphaned_responses=core.orphaned,
                orphans_dropped=core.orphans_dropped,
                breaker_overflows=overflows,
            )


def _pool_limit(limits: httpx.Limits | None) -> int | None:
    return limits.max_connections if limits is not None else None
