"""pipeline_throughput's three consumers, and how each is timed.

Every consumer is timed the same way: from a first look (``_Mark``) taken once it has
counted its first events, so start-up and group join are left out, to a last look once it
has counted them all. Each look reads the process's CPU (psutil), how long its threads were
runnable but had no CPU (``/proc/PID/task/*/schedstat``), and the machine's CPU pressure
(``/proc/pressure/cpu``): on a shared machine, a low rate with a high wait share means "no
CPU was free", not "the code is slow"; CPU per event stays comparable.

- :func:`measure_worker`: the real ``egresswatch worker`` in a subprocess.
- :func:`ceiling_role`: a bare aiokafka ``getmany`` loop running ``IngestProcessor.process``.
- :func:`naive_role`: a bare Faust agent that discards one event per record.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import psutil
from _services import free_port
from _throughput_workload import ROOT
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.ingest import IngestProcessor
from pipeline.app import CELLS_TABLE
from pipeline.settings import WorkerSettings
from tables.aggregate import WindowAggregate
from tables.metrics import EgressMetrics

__all__ = ["ceiling_role", "log", "measure_worker", "naive_role"]


_STARTED: Final = time.perf_counter()


def log(message: str) -> None:
    """A progress line on stderr, stamped with the seconds since start."""
    elapsed = time.perf_counter() - _STARTED
    print(f"[pipeline_throughput +{elapsed:5.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class _Mark:
    """One look at a consumer process."""

    wall: float  # time.perf_counter()
    count: int  # events counted so far
    cpu: float  # CPU seconds of the process, all threads (psutil)
    waiting: float  # seconds its threads were runnable but had no CPU (/proc/PID/task/*/schedstat)
    pressure: float  # seconds some task of the machine waited for a CPU (/proc/pressure/cpu)


def _mark(ps: Any, count: int) -> _Mark:
    times = ps.cpu_times()
    waiting = 0
    for task in Path(f"/proc/{ps.pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            waiting += int(task.read_text().split()[1])
    pressure = 0.0
    with contextlib.suppress(OSError, IndexError, ValueError):
        first_line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        pressure = int(first_line.rsplit("total=", 1)[1]) / 1e6
    return _Mark(time.perf_counter(), count, times.user + times.system, waiting / 1e9, pressure)


def _rate(first: _Mark, last: _Mark) -> dict[str, Any]:
    events, wall, cpu = last.count - first.count, last.wall - first.wall, last.cpu - first.cpu
    return {
        "events_per_s": events / wall,
        "cpu_us_per_event": cpu / events * 1e6,
        "events_per_cpu_s": events / cpu,
        "cpu_utilisation": cpu / wall,  # of one core; > 1 with busy threads besides the main one
        "cpu_wait_share": (last.waiting - first.waiting) / wall,  # runnable, no CPU free
        "machine_cpu_pressure": (last.pressure - first.pressure) / wall,
        "measured_events": events,
        "measured_s": wall,
    }


# -- (a) the real worker -------------------------------------------------------------------


_COUNTED: Final = (b"egresswatch_outbound_requests_total{", b"egresswatch_dead_letters_total{")


async def _scrape(client: httpx.AsyncClient, url: str) -> int | None:
    """Events the worker has counted (aggregated or dead-lettered), ``None`` if not serving."""
    try:
        body = (await client.get(url)).content
    except httpx.HTTPError:
        return None
    lines = body.splitlines()
    return int(sum(float(line.rsplit(b" ", 1)[1]) for line in lines if line.startswith(_COUNTED)))


def measure_worker(settings: WorkerSettings, events: int, workdir: Path) -> dict[str, Any]:
    """Run ``egresswatch worker`` (one process) until it has counted ``events``; time it."""
    port = free_port()
    env = {
        **os.environ,
        "EGRESSWATCH_PROBE_TOPIC": settings.probe_topic,
        "EGRESSWATCH_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
        "EGRESSWATCH_ALERTS_TOPIC": settings.alerts_topic,
    }
    cmd = [
        *(sys.executable, "-m", "pipeline.cli", "worker", "--bootstrap", settings.kafka_bootstrap),
        *("--partitions", str(settings.probe_partitions), "--http-port", str(port)),
        *("--data-dir", str(workdir / "worker"), "--app-id", settings.app_id),
    ]
    logfile = workdir / "worker.log"
    with logfile.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        watch = _watch_worker(proc, settings, f"http://127.0.0.1:{port}/metrics", events, logfile)
        return asyncio.run(watch)
    finally:
        _stop(proc)


async def _watch_worker(
    proc: subprocess.Popen[bytes], settings: WorkerSettings, url: str, events: int, logfile: Path
) -> dict[str, Any]:
    """Time the worker without loading it.

    A scrape of ``/metrics`` costs the worker tens of ms once it holds all series, so it is
    scraped only until it counts its first events, and to confirm the end. Progress in
    between is read from the broker: the worker writes the cells changelog as it ingests, so
    the end is the moment that topic's end offsets stop moving (polled every 20 ms).
    """
    ps = psutil.Process(proc.pid)
    changelog = f"{settings.app_id}-{CELLS_TABLE}-changelog"
    partitions = [TopicPartition(changelog, p) for p in range(settings.probe_partitions)]
    launched = time.perf_counter()
    offsets = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await offsets.start()
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            while not (counted := await _scrape(http, url)):
                _check_alive(proc, logfile, launched)
                await asyncio.sleep(0.05)
            first = last = _mark(ps, counted)
            log(f"worker: first events counted {first.wall - launched:.1f} s after launch")
            written, scraped_at = -1, 0.0
            while True:
                _check_alive(proc, logfile, launched)
                total = sum((await offsets.end_offsets(partitions)).values())
                now = time.perf_counter()
                if total != written:
                    written, last = total, _mark(ps, 0)
                elif now - last.wall > 0.5 and now - scraped_at > 1.0:  # quiet: done or stalled?
                    scraped_at = now
                    counted = await _scrape(http, url) or 0
                    if counted >= events:
                        break
                    if now - last.wall > 60.0:
                        raise RuntimeError(f"worker stalled at {counted}/{events} events")
                await asyncio.sleep(0.02)
    finally:
        await offsets.stop()
    measured = _rate(first, dataclasses.replace(last, count=counted))
    return {**measured, "startup_s": first.wall - launched, "rss_mb": ps.memory_info().rss / 2**20}


def _check_alive(proc: subprocess.Popen[bytes], logfile: Path, launched: float) -> None:
    if proc.poll() is not None:
        raise RuntimeError(f"worker exited ({proc.returncode}): {_tail(logfile)}")
    if time.perf_counter() - launched > 600.0:
        raise RuntimeError(f"worker did not finish in 600 s: {_tail(logfile)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- (b) the ceiling, (c) the naive Faust agent: the script runs each in its own process --


async def ceiling_role(cfg: dict[str, Any]) -> dict[str, Any]:
    """Bare aiokafka: getmany -> IngestProcessor.process -> merge cells into a dict."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=cfg["bootstrap"],
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    processor = IngestProcessor(metrics=EgressMetrics())
    table: dict[tuple[str, int], WindowAggregate] = {}
    ps = psutil.Process()
    first: _Mark | None = None
    counted = 0
    try:
        consumer.assign([TopicPartition(cfg["topic"], p) for p in range(cfg["partitions"])])
        while counted < cfg["events"]:
            batches = await consumer.getmany(timeout_ms=1_000)
            for tp, records in batches.items():
                for record in records:
                    result = processor.process(
                        record.value, topic=tp.topic, partition=tp.partition, offset=record.offset
                    )
                    for cell_id, fresh in result.cells.items():
                        current = table.get(cell_id)
                        if current is None:
                            table[cell_id] = fresh
                        else:
                            current.merge(fresh)
                    counted += result.valid + len(result.dead_letters)
                    if first is None:
                        first = _mark(ps, counted)
        last = _mark(ps, counted)
    finally:
        await consumer.stop()
    assert first is not None
    return _rate(first, last)


def naive_role(cfg: dict[str, Any]) -> None:
    """A bare Faust agent over one event per record that discards each record."""
    import faust

    asyncio.set_event_loop(asyncio.new_event_loop())
    app = faust.App(
        cfg["app_id"],
        broker=f"kafka://{cfg['bootstrap']}",
        store="memory://",
        datadir=cfg["datadir"],
        web_enabled=False,
        topic_partitions=cfg["partitions"],
        topic_replication_factor=1,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        logging_config=None,
    )
    topic = app.topic(
        cfg["topic"],
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=cfg["partitions"],
    )
    target: int = cfg["events"]
    ps = psutil.Process()
    state: dict[str, Any] = {"n": 0, "first": None}

    @app.agent(topic)
    async def discard(stream: Any) -> None:
        async for _value in stream:
            state["n"] += 1
            if state["first"] is None:
                state["first"] = _mark(ps, 1)
            elif state["n"] == target:
                print(json.dumps(_rate(state["first"], _mark(ps, target))), flush=True)
                os.kill(os.getpid(), signal.SIGTERM)  # the worker's own graceful stop

    faust.Worker(
        app, loglevel="warning", quiet=True, redirect_stdouts=False
    ).execute_from_commandline()
