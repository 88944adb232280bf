"""The whole stack of one campaign run, brought up in order and torn down in reverse.

Kafka and Ceph RGW first (in parallel, with the project's scripts), then the run's own
topics, the fault upstream (in a network namespace of its own when it can be made, so that
packet loss is real), Toxiproxy in front of it (callers go through it), the workers, and a
Prometheus scraping them. Topic names, the workers' app id and the RGW key prefix carry the
run's id, so the evidence read back after the run is this run's only.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from pipeline.campaign._ports import free_port
from pipeline.campaign.display import LiveDisplay
from pipeline.campaign.incidents import IncidentTargets
from pipeline.campaign.network import UpstreamPath
from pipeline.campaign.observe import Observation
from pipeline.campaign.profile import Plan
from pipeline.campaign.prometheus import Prometheus
from pipeline.campaign.raw import LoadTick
from pipeline.campaign.stack import (
    REPO,
    KafkaLocal,
    RgwLocal,
    StackSettings,
    WorkerProcess,
    worker_process,
)
from pipeline.settings import WorkerSettings

__all__ = ["RunTopics", "Topology"]

_BUCKET = "egresswatch"


class RunTopics:
    """The run's topic names: ``campaign.<run id>.probe`` and so on."""

    def __init__(self, run_id: str, partitions: int) -> None:
        self.prefix = f"campaign.{run_id}"
        self.partitions = partitions

    @property
    def probe(self) -> str:
        return f"{self.prefix}.probe"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}.alerts"


class Topology:
    def __init__(self, plan: Plan, run_dir: Path, settings: StackSettings, console: Console):
        self.plan = plan
        self.run_dir = run_dir
        self.raw = run_dir / "raw"
        self.logs = run_dir / "logs"
        self.settings = settings
        self.console = console
        self.run_id = re.sub(r"[^A-Za-z0-9-]+", "-", run_dir.resolve().name).strip("-")[:80]
        self.topics = RunTopics(self.run_id, plan.partitions)
        self.app_id = f"campaign-{self.run_id}"
        self.bucket = _BUCKET
        self.sink_prefix = f"campaign/{self.run_id}"
        self.kafka = KafkaLocal(settings)
        self.rgw = RgwLocal(settings)
        self.workers: list[WorkerProcess] = []
        self.prometheus: Prometheus | None = None
        self.upstream = UpstreamPath(plan, settings.state, self.logs, console)
        self.observation: Observation | None = None
        self.t0: float | None = None
        self._load_pid: int | None = None
        self._phase = "starting"

    # ------------------------------------------------------------------------------- up

    async def up(
        self, stack: contextlib.AsyncExitStack, display: LiveDisplay, stopping: asyncio.Event
    ) -> None:
        say = display.message
        self._phase = "Kafka and Ceph RGW"
        say("starting Kafka and Ceph RGW (scripts/kafka-local, scripts/rgw-local)...")
        stack.callback(self._close_quietly, self.rgw.close, "Ceph RGW")
        stack.callback(self._close_quietly, self.kafka.close, "Kafka")
        await asyncio.gather(asyncio.to_thread(self.kafka.up), asyncio.to_thread(self.rgw.up))
        say(f"Kafka at {self.kafka.bootstrap}, RGW at {self.rgw.endpoint}")
        await self._ensure_topics()
        self._phase = "upstream"
        await asyncio.to_thread(self.upstream.up)
        stack.callback(self._close_quietly, self.upstream.close, "upstream")
        say(f"upstream: {self.upstream.describe()}")
        self._phase = "workers"
        stack.push_async_callback(self._stop_workers)
        await self._start_workers()
        say(f"{len(self.workers)} worker(s) ready: {', '.join(w.url for w in self.workers)}")
        self._phase = "Prometheus"
        prometheus = Prometheus(
            self.settings.state / f"prometheus-{self.run_id}",
            free_port(),
            job="egresswatch-workers",
            targets=[f"127.0.0.1:{w.port}" for w in self.workers],
        )
        await asyncio.to_thread(prometheus.__enter__)
        stack.callback(self._close_quietly, prometheus.stop, "Prometheus")
        self.prometheus = prometheus
        say(f"Prometheus at {prometheus.url}")
        self._phase = "running"

    async def _ensure_topics(self) -> None:
        from pipeline.app import topic_specs
        from pipeline.topics import ensure_topics

        await ensure_topics(self.kafka.bootstrap, topic_specs(self._worker_settings()))

    def _worker_settings(self) -> WorkerSettings:
        return WorkerSettings(
            kafka_bootstrap=self.kafka.bootstrap,
            app_id=self.app_id,
            probe_topic=self.topics.probe,
            dead_letter_topic=self.topics.dead_letters,
            alerts_topic=self.topics.alerts,
            probe_partitions=self.plan.partitions,
        )

    def _worker_env(self) -> dict[str, str]:
        return {
            "EGRESSWATCH_APP_ID": self.app_id,
            "EGRESSWATCH_PROBE_TOPIC": self.topics.probe,
            "EGRESSWATCH_DEAD_LETTER_TOPIC": self.topics.dead_letters,
            "EGRESSWATCH_ALERTS_TOPIC": self.topics.alerts,
            "EGRESSWATCH_PROBE_PARTITIONS": str(self.plan.partitions),
            "EGRESSWATCH_S3_ENDPOINT": self.rgw.endpoint,
            "EGRESSWATCH_S3_ACCESS_KEY": self.rgw.access_key,
            "EGRESSWATCH_S3_SECRET_KEY": self.rgw.secret_key,
            "EGRESSWATCH_S3_BUCKET": self.bucket,
            "EGRESSWATCH_SINK_PREFIX": self.sink_prefix,
            "EGRESSWATCH_SINK_IDLE_S": "1",
            "EGRESSWATCH_SINK_MAX_AGE_S": "10",
            "EGRESSWATCH_TICK_INTERVAL_S": "1",
            "EGRESSWATCH_ALERT_INTERVAL_S": "2",
            # The runner samples every worker each second from one address.
            "EGRESSWATCH_API_RATE_PER_S": "0",
        }

    async def _start_workers(self) -> None:
        env = self._worker_env()
        for index in range(self.plan.workers):
            name = f"worker-{index + 1}"
            worker = worker_process(
                name,
                port=free_port(),
                bootstrap=self.kafka.bootstrap,
                data_dir=self.settings.state / "workers" / self.run_id / name,
                log=self.logs / f"{name}.log",
                env=env,
            )
            worker.start()
            self.workers.append(worker)
        await asyncio.gather(*(asyncio.to_thread(w.wait_ready, 180) for w in self.workers))

    async def _stop_workers(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in self.workers))

    def _close_quietly(self, close: Callable[[], None], what: str) -> None:
        try:
            close()
        except Exception as exc:  # noqa: BLE001 - the rest must still be stopped
            self.console.print(f"[red]could not stop {what}: {exc}[/red]")

    # ------------------------------------------------------------------------ running

    async def start_load(self, t0: float) -> asyncio.subprocess.Process:
        plan_json = self.raw / "plan.json"
        args = [
            sys.executable,
            "-m",
            "pipeline.campaign.load",
            "--plan",
            str(plan_json),
            "--t0",
            f"{t0:.6f}",
            "--upstream",
            self.upstream.caller_url,
            "--bootstrap",
            self.kafka.bootstrap,
            "--topic",
            self.topics.probe,
            "--out",
            str(self.raw),
        ]
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / "load.log").open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *args,
                cwd=REPO,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        self._load_pid = proc.pid
        return proc

    async def start_collection(
        self, t0: float, latest_tick: Callable[[], LoadTick | None]
    ) -> Observation:
        assert self.prometheus is not None
        self.observation = Observation(self, latest_tick)
        await self.observation.start()
        return self.observation

    def worker_urls(self) -> dict[str, str]:
        return {w.name: w.url for w in self.workers}

    def pids(self) -> dict[str, int]:
        found: dict[str, int] = {}
        if (pid := self.kafka.pid) is not None:
            found["kafka"] = pid
        found.update(self.rgw.pids())
        for worker in self.workers:
            if worker.pid is not None:
                found[worker.name] = worker.pid
        if self.prometheus is not None and self.prometheus.pid is not None:
            found["prometheus"] = self.prometheus.pid
        if self._load_pid is not None:
            found["load"] = self._load_pid
        found.update(self.upstream.pids())
        return found

    def incident_targets(self) -> IncidentTargets:
        targets = self.upstream.incident_targets()
        targets.rgw_stop = self.rgw.rgw_stop
        targets.rgw_start = self.rgw.rgw_start
        targets.kafka_stop = self.kafka.down
        targets.kafka_start = self._kafka_up
        targets.worker_kill = lambda i: self.workers[i].kill() if i < len(self.workers) else None
        targets.worker_restart = lambda i: self.workers[i].start()
        if self.observation is not None:
            targets.slow_clients_start = self.observation.start_slow_clients
            targets.slow_clients_stop = self.observation.stop_slow_clients
        targets.produce_garbage = self._produce_garbage
        return targets

    def _kafka_up(self) -> None:
        self.kafka.up()

    async def _produce_garbage(self, records: int) -> int:
        from pipeline.campaign.garbage import produce_garbage

        return await produce_garbage(self.kafka.bootstrap, self.topics.probe, records)

    def status(self) -> dict[str, str]:
        ready = sum(1 for w in self.workers if w.pid is not None)
        return {"workers alive": f"{ready}/{len(self.workers)}", "stack": self._phase}

    def versions(self) -> dict[str, str]:
        from pipeline.campaign import provenance

        return {
            "kafka": provenance.kafka_version(REPO),
            "ceph": provenance.ceph_version(),
            "prometheus": provenance.prometheus_version(),
            **self.upstream.versions(),
        }
