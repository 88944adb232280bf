"""The HTTP clients of the load generator's simulated services.

Each service has a probed client (``httpx.AsyncClient`` over a :class:`ProbeTransport`
with the plan's route templates, timeouts and retry policy, its events to a real
:class:`KafkaEmitter` of its own) and an unprobed baseline client for the A/B phase.
Both send through an :class:`AttemptCounter` over their own pool of
``plan.client.max_connections`` connections with the same timeouts, so the A/B comparison
differs by the probe alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields

import httpx

from pipeline.campaign._groundtruth import AttemptCounter
from pipeline.campaign.profile import Plan
from pipeline.probe import ProbeConfig, ProbeTransport, RetryConfig, Timeouts
from pipeline.probe.emitter import EmitterStats, KafkaEmitter
from pipeline.probe.sink import EventSink

__all__ = [
    "EMITTER_COUNTERS",
    "PROBE_COUNTERS",
    "ServiceClients",
    "build_clients",
    "sum_emitter_stats",
]

EMITTER_COUNTERS = tuple(
    f.name for f in fields(EmitterStats) if f.type in ("int", int) and f.name != "num_partitions"
)
PROBE_COUNTERS = (
    "events_emitted",
    "internal_errors",
    "route_overflows",
    "budget_refusals",
    "retries",
    "short_circuits",
    "orphaned_responses",
    "orphans_dropped",
    "breaker_overflows",
)


@dataclass
class ServiceClients:
    """One simulated service's clients, their counters and in-flight gauges."""

    service: str
    probed: httpx.AsyncClient
    transport: ProbeTransport
    probed_counter: AttemptCounter
    baseline: httpx.AsyncClient
    baseline_counter: AttemptCounter
    emitter: KafkaEmitter | None
    in_flight: dict[bool, int] = field(default_factory=lambda: {True: 0, False: 0})
    """Calls in flight by client (True: probed), to tell when the pool makes a call wait."""

    def client(self, probed: bool) -> tuple[httpx.AsyncClient, AttemptCounter]:
        if probed:
            return self.probed, self.probed_counter
        return self.baseline, self.baseline_counter

    def breaker_states(self) -> dict[str, str]:
        return {f"{self.service}/{b.name}": b.state for b in self.transport.stats().breakers}

    def probe_counters(self) -> dict[str, int]:
        stats = self.transport.stats()
        return {name: int(getattr(stats, name)) for name in PROBE_COUNTERS}

    async def aclose_clients(self) -> None:
        await asyncio.gather(self.probed.aclose(), self.baseline.aclose(), return_exceptions=True)


def probe_config(plan: Plan, service: str) -> ProbeConfig:
    client = plan.client
    return ProbeConfig(
        service=service,
        route_templates=tuple(r.template for r in plan.routes),
        timeouts=_timeouts(plan),
        retry=RetryConfig(max_attempts=client.max_attempts, backoff_base_s=client.backoff_base_s),
    )


def _timeouts(plan: Plan) -> Timeouts:
    client = plan.client
    return Timeouts(
        connect=client.connect_timeout_s,
        read=client.read_timeout_s,
        write=client.read_timeout_s,
        pool=client.connect_timeout_s,
    )


def build_clients(
    plan: Plan,
    upstream: str,
    sink_for: Callable[[str], tuple[EventSink, KafkaEmitter | None]],
) -> dict[str, ServiceClients]:
    """Clients for every service of the plan; ``sink_for(service)`` gives the probe's sink
    and the emitter to close at the end (None when the sink is not an emitter)."""
    limits = httpx.Limits(
        max_connections=plan.client.max_connections,
        max_keepalive_connections=plan.client.max_connections,
    )
    timeouts = _timeouts(plan)
    timeout = httpx.Timeout(
        connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool
    )
    # Every call in flight is counted in one table at most: the scheduler's own bound.
    max_traces = plan.max_in_flight
    out: dict[str, ServiceClients] = {}
    for service in plan.services:
        sink, emitter = sink_for(service)
        probed_counter = AttemptCounter(limits, max_traces=max_traces)
        transport = ProbeTransport(
            probe_config(plan, service), sink, transport=probed_counter, limits=limits
        )
        baseline_counter = AttemptCounter(limits, max_traces=max_traces)
        out[service] = ServiceClients(
            service=service,
            probed=httpx.AsyncClient(base_url=upstream, transport=transport, timeout=timeout),
            transport=transport,
            probed_counter=probed_counter,
            baseline=httpx.AsyncClient(
                base_url=upstream, transport=baseline_counter, timeout=timeout
            ),
            baseline_counter=baseline_counter,
            emitter=emitter,
        )
    return out


def sum_emitter_stats(stats: Iterable[EmitterStats]) -> dict[str, int]:
    total = dict.fromkeys(EMITTER_COUNTERS, 0)
    for one in stats:
        for name in EMITTER_COUNTERS:
            total[name] += int(getattr(one, name))
    return total
