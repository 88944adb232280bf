"""Everything that watches a running campaign, started and stopped as one.

The per-second :class:`~pipeline.campaign.collect.Collector` (workers' REST and readiness,
the real Prometheus, RSS and CPU of every process, queue depths), the alerts topic tail,
and the WebSocket clients (one normal reader per worker for the whole run; slow readers
while a ``slow_ws_clients`` incident lasts). Processes restarted by incidents (a worker
after SIGKILL, the broker after an outage) are followed by pid every two seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.campaign.collect import AlertsTail, Collector
from pipeline.campaign.raw import LoadTick
from pipeline.campaign.wsclients import WsClients

if TYPE_CHECKING:
    from pipeline.campaign.topology import Topology

__all__ = ["Observation"]

_EMITTER_QUEUE_MAX = 100_000  # KafkaEmitter's default queue_max, per simulated service


class Observation:
    def __init__(self, topology: Topology, latest_tick: Callable[[], LoadTick | None]) -> None:
        assert topology.prometheus is not None
        self.topology = topology
        raw = topology.raw
        self.ws = WsClients(raw, [w.url for w in topology.workers])
        self.collector = Collector(
            raw,
            workers=topology.worker_urls(),
            prometheus_url=topology.prometheus.url,
            pids=topology.pids(),
            latest_tick=latest_tick,
            extra_queues=self.ws.queue_figures,
            emitter_queue_cap=float(_EMITTER_QUEUE_MAX * len(topology.plan.services)),
        )
        self.alerts = AlertsTail(topology.kafka.bootstrap, topology.topics.alerts, raw)
        self._follow: asyncio.Task[None] | None = None
        self._known: dict[str, int] = {}

    async def start(self) -> None:
        await self.collector.start()
        await self.alerts.start()
        self.ws.start_normal(per_worker=1)
        self._follow = asyncio.ensure_future(self._follow_pids())

    async def _follow_pids(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            current = self.topology.pids()
            for name in set(self._known) | set(current):
                if self._known.get(name) != current.get(name):
                    self.collector.set_pid(name, current.get(name))
            self._known = current

    async def start_slow_clients(self, incident_id: str, clients: int, delay: float) -> None:
        self.ws.start_slow(clients, delay)

    async def stop_slow_clients(self, incident_id: str) -> int:
        return len(await self.ws.stop_slow())

    async def stop(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        await self.ws.stop()
        await self.alerts.stop()
        await self.collector.stop()
