"""Start and stop each incident kind of a profile, against the running stack.

:class:`IncidentDriver` maps an :class:`~pipeline.campaign.profile.IncidentPlan` to actions on
the pieces the runner started: the fault upstream's control API (HTTP faults), Toxiproxy's
toxics (TCP faults), nftables in the upstream's namespace (packet loss), the scripts that
stop and start radosgw and the broker, a worker's process (SIGKILL, restart), slow WebSocket
clients, garbage records on the probe topic. The cardinality burst is made by the load
generator itself (it reads the plan); the driver only records it.

A piece the incident needs that is not there (no Toxiproxy binary, no root for namespaces)
raises :class:`NotRunnable` with the reason: the incident is reported "not run", never passed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.campaign.profile import HTTP_FAULTS, TCP_FAULTS, IncidentPlan

__all__ = ["IncidentDriver", "IncidentTargets", "NotRunnable"]


class NotRunnable(Exception):
    """This incident cannot run here; ``str(exc)`` says why."""


class FaultUpstream(Protocol):
    def set_fault(
        self, fault_id: str, kind: str, route: str | None, params: dict[str, Any]
    ) -> None: ...

    def clear_fault(self, fault_id: str) -> None: ...


class TcpFaults(Protocol):
    def start(self, incident_id: str, kind: str, params: dict[str, Any]) -> dict[str, Any]: ...

    def stop(self, incident_id: str) -> None: ...


class PacketLoss(Protocol):
    def set_loss(self, percent: float) -> None: ...

    def clear_loss(self) -> None: ...


@dataclass
class IncidentTargets:
    """What the incidents act on; a None piece makes its incidents :class:`NotRunnable`."""

    upstream: FaultUpstream | None = None
    tcp: TcpFaults | None = None
    tcp_missing: str = "Toxiproxy is not running"
    loss: PacketLoss | None = None
    loss_missing: str = "no network namespace for the upstream"
    rgw_stop: Callable[[], None] | None = None
    rgw_start: Callable[[], None] | None = None
    kafka_stop: Callable[[], None] | None = None
    kafka_start: Callable[[], None] | None = None
    worker_kill: Callable[[int], int | None] | None = None
    worker_restart: Callable[[int], None] | None = None
    slow_clients_start: Callable[[str, int, float], Awaitable[None]] | None = None
    slow_clients_stop: Callable[[str], Awaitable[int]] | None = None
    produce_garbage: Callable[[int], Awaitable[int]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class IncidentDriver:
    """``detail = await driver.start(incident)`` ... ``detail |= await driver.stop(incident)``.

    Blocking actions (scripts, process signals) run in a thread so the runner's loop (load
    ticks, collection, display) keeps going while radosgw or the broker stops.
    """

    def __init__(self, targets: IncidentTargets) -> None:
        self.t = targets

    async def start(self, incident: IncidentPlan) -> dict[str, Any]:
        kind = incident.kind
        params = dict(incident.params)
        t = self.t
        if kind in HTTP_FAULTS:
            if t.upstream is None:
                raise NotRunnable("the fault upstream is not running")
            upstream = t.upstream
            await asyncio.to_thread(upstream.set_fault, incident.id, kind, incident.route, params)
            return {"route": incident.route, "params": params}
        if kind in TCP_FAULTS:
            if t.tcp is None:
                raise NotRunnable(t.tcp_missing)
            return await asyncio.to_thread(t.tcp.start, incident.id, kind, params)
        if kind == "packet_loss":
            if t.loss is None:
                raise NotRunnable(t.loss_missing)
            percent = float(params.get("percent", 10))
            await asyncio.to_thread(t.loss.set_loss, percent)
            return {"percent": percent}
        if kind == "rgw_down":
            return await self._blocking(t.rgw_stop, "radosgw control")
        if kind == "kafka_down":
            return await self._blocking(t.kafka_stop, "Kafka control")
        if kind == "worker_kill":
            if t.worker_kill is None:
                raise NotRunnable("no worker to kill")
            index = int(params.get("worker", 1)) - 1
            pid = await asyncio.to_thread(t.worker_kill, index)
            if pid is None:
                raise NotRunnable(f"worker {index + 1} was not running")
            return {"worker": index + 1, "killed_pid": pid}
        if kind == "slow_ws_clients":
            if t.slow_clients_start is None:
                raise NotRunnable("no worker serves the live feed")
            clients = int(params.get("clients", 3))
            delay = float(params.get("read_delay_s", 0.5))
            await t.slow_clients_start(incident.id, clients, delay)
            return {"clients": clients, "read_delay_s": delay}
        if kind == "cardinality_burst":
            return {"routes": params.get("routes"), "rate": params.get("rate")}
        if kind == "garbage_records":
            if t.produce_garbage is None:
                raise NotRunnable("no Kafka producer")
            sent = await t.produce_garbage(int(params.get("records", 100)))
            return {"garbage_records": sent}
        raise NotRunnable(f"no driver for incident kind {kind!r}")

    async def stop(self, incident: IncidentPlan) -> dict[str, Any]:
        kind = incident.kind
        t = self.t
        if kind in HTTP_FAULTS and t.upstream is not None:
            await asyncio.to_thread(t.upstream.clear_fault, incident.id)
        elif kind in TCP_FAULTS and t.tcp is not None:
            await asyncio.to_thread(t.tcp.stop, incident.id)
        elif kind == "packet_loss" and t.loss is not None:
            await asyncio.to_thread(t.loss.clear_loss)
        elif kind == "rgw_down":
            return await self._blocking(t.rgw_start, "radosgw control")
        elif kind == "kafka_down":
            return await self._blocking(t.kafka_start, "Kafka control")
        elif kind == "worker_kill" and t.worker_restart is not None:
            index = int(incident.params.get("worker", 1)) - 1
            await asyncio.to_thread(t.worker_restart, index)
            return {"restarted": index + 1}
        elif kind == "slow_ws_clients" and t.slow_clients_stop is not None:
            return {"slow_clients_stopped": await t.slow_clients_stop(incident.id)}
        return {}

    @staticmethod
    async def _blocking(action: Callable[[], None] | None, what: str) -> dict[str, Any]:
        if action is None:
            raise NotRunnable(f"no {what}")
        began = time.time()
        await asyncio.to_thread(action)
        return {"took_s": round(time.time() - began, 3)}
