"""What both probe transports share: their stats view, setup of requests and attempts."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import httpx

from pipeline.probe._attempt import _Attempt, _Logical
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
        with core.lock:
            return ProbeStats(
                service=core.service,
                in_flight=dict(core.in_flight),
                in_flight_total=core.in_flight_total,
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

    def _begin(self, request: httpx.Request) -> _Logical | None:
        core = self._core
        if core.orphans:
            core.drain_orphans()
        try:
            return core.begin(request)
        except Exception as exc:  # noqa: BLE001 - I5: send unobserved rather than fail
            core.internal_error(exc, request)
            return None

    def _open(
        self, logical: _Logical, attempt: int, loop: asyncio.AbstractEventLoop | None
    ) -> _Attempt | bool:
        """Start an attempt. ``False``: the breaker refused it (its event is out).

        ``True``: the probe itself failed here; the caller's request is then sent unobserved.
        """
        core = self._core
        breaker = logical.breaker
        acquired = False
        try:
            if breaker is not None:
                acquired = breaker.try_acquire()
                if not acquired:
                    core.emit_breaker_open(logical, attempt, breaker)
                    return False
            return _Attempt(core, logical, attempt, breaker, loop)
        except Exception as exc:  # noqa: BLE001 - I5
            core.internal_error(exc, logical.request)
            if acquired and breaker is not None:
                with contextlib.suppress(Exception):
                    breaker.release()
            return True


def _pool_limit(limits: httpx.Limits | None) -> int | None:
    return limits.max_connections if limits is not None else None
