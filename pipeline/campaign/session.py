"""The live part of a campaign: the stack up, the load and incidents on schedule, evidence.

:meth:`Session.run` owns one event loop. It brings the stack up (:mod:`.topology`), starts
the load generator as a process of its own (so the runner's collection never slows the
callers), drives the incidents on the plan's clock, samples the system every second, and
after the drain reads the evidence back (Kafka, RGW both ways). Ctrl-C once: the load stops,
active incidents are healed, evidence is still read, the report is marked incomplete. Twice:
evidence is skipped. Everything started is stopped on the way out, in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import msgspec
from rich.console import Console

from pipeline.campaign import evidence
from pipeline.campaign.display import LiveDisplay, RunningCounts
from pipeline.campaign.incidents import IncidentDriver, NotRunnable
from pipeline.campaign.profile import IncidentPlan, Plan
from pipeline.campaign.raw import IncidentRun, LoadTick, append_jsonl, write_json, write_jsonl
from pipeline.campaign.stack import StackSettings
from pipeline.campaign.topology import Topology

__all__ = ["Session"]

_tick_decoder = msgspec.json.Decoder(LoadTick)


class Session:
    def __init__(self, plan: Plan, run_dir: Path, settings: StackSettings, console: Console):
        self.plan = plan
        self.run_dir = run_dir
        self.raw = run_dir / "raw"
        self.settings = settings
        self.console = console
        self.t0: float | None = None
        self.stop_reason: str | None = None
        self.topology = Topology(plan, run_dir, settings, console)
        self.counts = RunningCounts()
        self.incident_runs: dict[str, IncidentRun] = {}
        self._stopping = asyncio.Event()
        self._abort = False
        self._load: asyncio.subprocess.Process | None = None

    def component_versions(self) -> dict[str, str]:
        return self.topology.versions()

    def run(self) -> None:
        asyncio.run(self._main())

    def _interrupt(self) -> None:
        if self._stopping.is_set():
            self._abort = True
            self.console.print("[red]second Ctrl-C: skipping evidence, stopping everything[/red]")
            return
        self.stop_reason = "interrupted"
        self.console.print("[yellow]Ctrl-C: stopping the load, healing incidents...[/yellow]")
        self._stopping.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._interrupt)
        try:
            async with contextlib.AsyncExitStack() as stack:
                with LiveDisplay(self.plan, self.console) as display:
                    await self.topology.up(stack, display, self._stopping)
                    if not self._stopping.is_set():
                        await self._drive(display)
                if not self._abort:
                    await self._evidence()
                self.console.print("stopping the stack...")
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            self._write_incidents()

    async def _drive(self, display: LiveDisplay) -> None:
        plan = self.plan
        self.t0 = time.time() + 1.0
        self.topology.t0 = self.t0
        self._load = await self.topology.start_load(self.t0)
        collector = await self.topology.start_collection(self.t0, self._latest_tick)
        driver = IncidentDriver(self.topology.incident_targets())
        for incident in plan.incidents:
            self.incident_runs[incident.id] = IncidentRun(
                id=incident.id,
                kind=incident.kind,
                planned_start_s=incident.start_s,
                planned_end_s=incident.end_s,
                ran=False,
                reason="not reached (the run stopped before its start)",
                route=incident.route,
                expect_alerts=list(incident.expect_alerts),
            )
        tasks = [
            asyncio.ensure_future(self._read_ticks()),
            *(asyncio.ensure_future(self._incident(driver, i)) for i in plan.incidents),
        ]
        try:
            deadline = self.t0 + plan.total_s
            while time.time() < deadline and not self._stopping.is_set():
                display.update(self.t0, self.counts, self.topology.status())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 0.5)
        finally:
            self._stopping.set()  # heals the incidents still active
            await self._stop_load()
            await asyncio.gather(*tasks, return_exceptions=True)
            await collector.stop()

    async def _incident(self, driver: IncidentDriver, incident: IncidentPlan) -> None:
        assert self.t0 is not None
        record = self.incident_runs[incident.id]
        if await self._sleep_until(self.t0 + incident.start_s):
            return
        record.started_at = time.time()
        try:
            record.detail = await driver.start(incident)
            record.ran = True
            record.reason = None
        except NotRunnable as exc:
            record.reason = str(exc)
            return
        except Exception as exc:  # noqa: BLE001 - a failed incident is reported, the run goes on
            record.reason = f"could not start: {type(exc).__name__}: {exc}"
            self.console.print(f"[red]incident {incident.id}: {record.reason}[/red]")
        await self._sleep_until(self.t0 + incident.end_s)
        try:
            record.detail |= await driver.stop(incident)
        except Exception as exc:  # noqa: BLE001
            record.reason = f"could not end cleanly: {type(exc).__name__}: {exc}"
            self.console.print(f"[red]incident {incident.id}: {record.reason}[/red]")
        record.ended_at = time.time()

    async def _sleep_until(self, when: float) -> bool:
        """Sleep until ``when``; True if the run is stopping instead."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), max(0.0, when - time.time()))
        return self._stopping.is_set() and time.time() < when

    def _latest_tick(self) -> LoadTick | None:
        return self.counts.last

    async def _read_ticks(self) -> None:
        assert self._load is not None and self._load.stdout is not None
        async for line in self._load.stdout:
            with contextlib.suppress(msgspec.DecodeError):
                self.counts.add(_tick_decoder.decode(line))

    async def _stop_load(self) -> None:
        load = self._load
        if load is None:
            return
        if load.returncode is None and self.stop_reason is not None:
            load.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(load.wait(), 60)
        except TimeoutError:
            load.kill()
            await load.wait()

    async def _evidence(self) -> None:
        topo = self.topology
        self.console.print("reading the evidence back: sink settled, Kafka, RGW...")
        settled = await evidence.wait_sink_settled(topo.worker_urls(), timeout=90)
        append_jsonl(self.raw / "settle.jsonl", settled)
        summary = await evidence.read_probe_topic(
            topo.kafka.bootstrap, topo.topics.probe, topo.topics.dead_letters, self.raw
        )
        summary.garbage_injected = sum(
            int(r.detail.get("garbage_records", 0)) for r in self.incident_runs.values()
        )
        write_json(self.raw / "kafka_summary.json", summary)
        since = (self.t0 or time.time()) - 120
        await evidence.read_rgw(
            topo.rgw.endpoint,
            topo.rgw.access_key,
            topo.rgw.secret_key,
            topo.bucket,
            topo.sink_prefix,
            list(self.plan.services),
            since,
            time.time() + 120,
            self.raw,
        )

    def _write_incidents(self) -> None:
        write_jsonl(self.raw / "incidents.jsonl", self.incident_runs.values())
