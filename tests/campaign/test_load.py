"""The load generator: ground truth (attempts == probe events) for every outcome, dropped
iterations, ticks, histograms, the summary; and the real process against a real upstream and
the real Kafka, run to its end and stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer
from hdrh.histogram import HdrHistogram

from pipeline.campaign.load import LoadGenerator, plan_from_json
from pipeline.campaign.profile import IncidentPlan, Plan, parse_plan
from pipeline.campaign.raw import (
    CallRecord,
    LoadSummary,
    LoadTick,
    read_json,
    read_jsonl,
    write_json,
)
from pipeline.envelope import decode_batch
from pipeline.probe import MemorySink
from tests.conftest import MakeTopic
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
PROFILE = """
version = 1
name = "load-test"
seed = 11
duration_s = {load_s}
[load]
warmup_s = {warmup_s}
ab_phase_s = {ab_s}
ab_rate = {rate}
drain_s = 2
max_in_flight = {max_in_flight}
tiers = [{{ at = 0, rate = {rate} }}]
[services]
count = {services}
prefix = "lt"
routes = [{{ template = "/users/{{id}}", weight = 3 }}, {{ template = "/search", weight = 1 }}]
connect_timeout_s = 0.3
read_timeout_s = 0.3
max_attempts = {attempts}
backoff_base_s = 0.01
"""


def make_plan(
    *,
    load_s: float = 1.5,
    warmup_s: float = 0,
    ab_s: float = 0,
    rate: float = 40,
    services: int = 1,
    attempts: int = 3,
    max_in_flight: int = 200,
) -> Plan:
    return parse_plan(
        PROFILE.format(
            load_s=load_s,
            warmup_s=warmup_s,
            ab_s=ab_s,
            rate=rate,
            services=services,
            attempts=attempts,
            max_in_flight=max_in_flight,
        )
    )


class Upstream:
    """An HTTP/1.1 server on 127.0.0.1 (keep-alive) whose behaviour the test picks:
    ``ok``; ``503`` always; ``flaky`` (503 to the first attempt of one trace in three);
    ``hang`` (answers after 5 s)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.attempts: Counter[str] = Counter()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                fields = (line.split(":", 1) for line in head.split("\r\n")[1:] if ":" in line)
                headers = {k.strip().lower(): v.strip() for k, v in fields}
                trace = headers.get("traceparent", "")[3:35]
                self.attempts[trace] += 1
                status = 200
                if self.mode == "hang":
                    await asyncio.sleep(5)
                elif self.mode == "503":
                    status = 503
                elif self.mode == "flaky" and self.attempts[trace] == 1:
                    status = 503 if int(trace[-4:] or "0", 16) % 3 == 0 else 200
                body = b'{"ok":true}'
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()


@contextlib.asynccontextmanager
async def upstream_url(mode: str) -> AsyncIterator[str]:
    if mode == "refused":
        yield f"http://127.0.0.1:{free_port()}"  # nothing listens there
        return
    upstream = Upstream(mode)
    url = await upstream.start()
    try:
        yield url
    finally:
        await upstream.stop()


async def run_in_process(
    plan: Plan, url: str, out: Path, *, stop_after_s: float | None = None
) -> tuple[LoadGenerator, MemorySink]:
    sink = MemorySink()
    generator = LoadGenerator(
        plan, t0=time.time() + 0.2, upstream=url, out=out, sink_for=lambda _s: (sink, None)
    )
    if stop_after_s is None:
        await generator.run()
    else:
        run = asyncio.ensure_future(generator.run())
        await asyncio.sleep(stop_after_s)
        generator.stop()
        await asyncio.wait_for(run, 10)
    return generator, sink


def ground_truth(out: Path, trace_events: Counter[str]) -> list[CallRecord]:
    """Every probed call's attempts == its events; baseline calls and nothing else: none."""
    calls = list(read_jsonl(out / "calls.jsonl", CallRecord))
    events = Counter(trace_events)
    for call in calls:
        assert events.pop(call.trace_id, 0) == (call.attempts if call.probed else 0), call
    assert not events, f"events of no logical request: {events}"
    return calls


@pytest.mark.parametrize(
    ("mode", "attempts", "outcomes"),
    [
        ("ok", 3, {"ok"}),
        ("flaky", 3, {"ok"}),
        ("503", 3, {"http_error", "breaker_open"}),
        ("hang", 2, {"timeout", "breaker_open"}),
        ("refused", 3, {"connect_error", "breaker_open"}),
    ],
)
async def test_attempts_equal_events_for_every_outcome(
    mode: str, attempts: int, outcomes: set[str], tmp_path: Path
) -> None:
    plan = make_plan(attempts=attempts, ab_s=1 if mode == "ok" else 0)
    async with upstream_url(mode) as url:
        generator, sink = await run_in_process(plan, url, tmp_path)
    calls = ground_truth(tmp_path, Counter(e.trace_id for e in sink.events))
    assert len(calls) > 20
    assert {c.outcome for c in calls} == outcomes
    probed = [c for c in calls if c.probed]
    if mode == "flaky":
        assert any(c.attempts == 2 for c in probed)
    if mode in ("503", "refused"):
        assert any(c.attempts == attempts for c in probed if c.outcome != "breaker_open")
        assert all(c.attempts >= 1 for c in probed)
    if mode == "ok":
        assert {c.phase for c in calls} == {"ab", "load"}
        assert sum(not c.probed for c in calls) > 5
        assert all(c.status == 200 and c.attempts == 1 for c in calls)
    for clients in generator.clients.values():  # the ground-truth tables hold no leftovers
        assert clients.probed_counter.tracked == clients.baseline_counter.tracked == 0
    for call in calls:
        assert call.latency_ms >= 0 and call.intended_at <= call.started_at + 0.05
    summary = read_json(tmp_path / "load_summary.json", LoadSummary)
    assert summary.complete
    assert sum(p.started for p in summary.phases.values()) == len(calls)
    assert summary.probe["events_emitted"] == len(sink.events)
    assert summary.probe["loadgen_uncounted_attempts"] == 0


async def test_cancelled_calls_are_recorded_with_their_events(tmp_path: Path) -> None:
    plan = make_plan(load_s=5, attempts=2)
    async with upstream_url("hang") as url:
        generator, sink = await run_in_process(plan, url, tmp_path, stop_after_s=0.45)
    calls = ground_truth(tmp_path, Counter(e.trace_id for e in sink.events))
    assert "cancelled" in {c.outcome for c in calls}
    summary = read_json(tmp_path / "load_summary.json", LoadSummary)
    assert not summary.complete and generator.interrupted
    assert summary.phases["load"].started == len(calls)


async def test_full_in_flight_drops_iterations_and_counts_them(tmp_path: Path) -> None:
    plan = make_plan(load_s=1.0, rate=60, max_in_flight=2, attempts=1)
    async with upstream_url("hang") as url:
        await run_in_process(plan, url, tmp_path)
    summary = read_json(tmp_path / "load_summary.json", LoadSummary)
    load = summary.phases["load"]
    assert load.dropped_iterations > 20
    assert load.scheduled == load.started + load.dropped_iterations
    assert len(load.first_dropped_at) == 10
    assert load.first_dropped_at == sorted(load.first_dropped_at)
    ticks = list(read_jsonl(tmp_path / "load.jsonl", LoadTick))
    assert sum(t.dropped for t in ticks) == load.dropped_iterations
    assert sum(t.started for t in ticks) == load.started
    assert max(t.in_flight for t in ticks) <= 2
    assert len(list(read_jsonl(tmp_path / "calls.jsonl", CallRecord))) == load.started


async def test_ticks_histograms_and_summary_add_up(tmp_path: Path) -> None:
    plan = make_plan(load_s=2, warmup_s=1, ab_s=1, services=2)
    async with upstream_url("ok") as url:
        await run_in_process(plan, url, tmp_path)
    calls = list(read_jsonl(tmp_path / "calls.jsonl", CallRecord))
    ticks = list(read_jsonl(tmp_path / "load.jsonl", LoadTick))
    assert len(ticks) >= 4
    assert sum(t.completed for t in ticks) == len(calls) == sum(t.ok for t in ticks)
    assert {t.phase for t in ticks} >= {"warmup", "ab", "load"}
    busy = [t for t in ticks if t.completed]
    assert all(t.p50_ms is not None and t.p50_ms <= (t.p99_ms or 0) for t in busy)
    assert all(t.rss_bytes > 0 for t in ticks)
    assert any(t.breakers for t in ticks)
    assert all(set(t.breakers.values()) == {"closed"} for t in ticks if t.breakers)
    summary = read_json(tmp_path / "load_summary.json", LoadSummary)
    assert set(summary.histograms) == {"warmup", "ab-probed", "ab-baseline", "load"}
    counts = Counter(
        "load"
        if c.phase == "load"
        else c.phase
        if c.phase == "warmup"
        else ("ab-probed" if c.probed else "ab-baseline")
        for c in calls
    )
    for name, file in summary.histograms.items():
        histogram = HdrHistogram.decode((tmp_path / file).read_bytes().strip())
        assert histogram.get_total_count() == counts[name], name
    assert {c.service for c in calls} == set(plan.services)


async def test_cardinality_burst_calls_never_seen_paths(tmp_path: Path) -> None:
    burst = IncidentPlan(
        id="01-cardinality_burst",
        kind="cardinality_burst",
        start_s=0.5,
        end_s=1.5,
        params={"routes": 500, "rate": 40},
    )
    plan = dataclasses.replace(make_plan(load_s=2), incidents=(burst,))
    async with upstream_url("ok") as url:
        _, sink = await run_in_process(plan, url, tmp_path)
    calls = ground_truth(tmp_path, Counter(e.trace_id for e in sink.events))
    attack = [c for c in calls if c.cardinality_attack]
    assert len(attack) > 15
    assert all(c.route.startswith("/burst1-") and c.phase == "load" for c in attack)
    summary = read_json(tmp_path / "load_summary.json", LoadSummary)
    assert summary.phases["cardinality_burst"].started == len(attack)
    assert summary.phases["load"].started == len(calls) - len(attack)
    assert "cardinality-burst" in summary.histograms


def test_plan_from_json_reads_what_the_runner_writes(tmp_path: Path) -> None:
    plan = parse_plan((REPO / "campaigns" / "nominal.toml").read_text(), quick=True)
    write_json(tmp_path / "plan.json", plan)
    assert plan_from_json((tmp_path / "plan.json").read_bytes()) == plan
    assert plan_from_json(msgspec.json.encode(plan)) == plan
    with pytest.raises(ValueError, match="not a campaign plan"):
        plan_from_json(b'{"name": 3}')


# -- the real process: real upstream sockets, real Kafka ---------------------------------------


async def start_process(
    plan: Plan, url: str, out: Path, bootstrap: str, topic: str
) -> tuple[asyncio.subprocess.Process, float]:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "plan.json", plan)
    t0 = time.time() + 2.0  # the process imports and connects meanwhile
    args = ["--plan", str(out / "plan.json"), "--t0", f"{t0:.6f}", "--upstream", url]
    args += ["--bootstrap", bootstrap, "--topic", topic, "--out", str(out)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline.campaign.load",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return proc, t0


async def read_topic(bootstrap: str, topic: str) -> Counter[str]:
    """Distinct events (by request_id) per trace id, from the whole topic."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        seen: dict[str, str] = {}
        async with asyncio.timeout(30):
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=200)
            ends = await consumer.end_offsets(list(consumer.assignment()))
            await consumer.seek_to_beginning()
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        for event in decode_batch(record.value or b"").valid:
                            seen[event.request_id] = event.trace_id
        return Counter(seen.values())
    finally:
        await consumer.stop()


async def test_the_process_runs_the_plan_against_real_kafka(
    kafka_bootstrap: str, kafka_topic: MakeTopic, tmp_path: Path
) -> None:
    topic = await kafka_topic(partitions=2)
    plan = make_plan(load_s=3, warmup_s=1, ab_s=2, rate=30, services=2)
    async with upstream_url("ok") as url:
        proc, t0 = await start_process(plan, url, tmp_path, kafka_bootstrap, topic)
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 40)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    assert time.time() >= t0 + plan.load_end_s
    printed = [msgspec.json.decode(line, type=LoadTick) for line in stdout.splitlines()]
    assert printed == list(read_jsonl(tmp_path / "load.jsonl", LoadTick))
    assert len(printed) >= 5
    calls = ground_truth(tmp_path, await read_topic(kafka_bootstrap, topic))
    assert {c.phase for c in calls} == {"warmup", "ab", "load"}
    assert {c.outcome for c in calls} == {"ok"}
    summary = read_json(tmp_path / "load_summary.json", LoadSummary)
    assert summary.complete
    assert summary.emitter["sent_events"] == sum(c.attempts for c in calls if c.probed)
    assert summary.emitter["dropped_queue_full"] == summary.emitter["dropped_on_close"] == 0
    assert sum(p.started for p in summary.phases.values()) == len(calls)
    assert printed[-1].emitter["submitted"] >= printed[-1].emitter["sent_events"]


async def test_the_process_stops_quickly_on_sigterm_and_writes_everything(
    kafka_bootstrap: str, kafka_topic: MakeTopic, tmp_path: Path
) -> None:
    topic = await kafka_topic()
    # Six services: no breaker has seen its 10 calls yet, so calls are in flight at the signal.
    plan = dataclasses.replace(make_plan(load_s=60, rate=30, services=6), max_in_flight=500)
    async with upstream_url("hang") as url:
        proc, t0 = await start_process(plan, url, tmp_path, kafka_bootstrap, topic)
        try:
            await asyncio.sleep(max(0.0, t0 + 1.5 - time.time()))
            proc.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            _, stderr = await asyncio.wait_for(proc.communicate(), 15)
            took = time.monotonic() - stopped
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    assert took < 10
    summary = read_json(tmp_path / "load_summary.json", LoadSummary)
    assert not summary.complete
    calls = ground_truth(tmp_path, await read_topic(kafka_bootstrap, topic))
    assert len(calls) == summary.phases["load"].started > 10
    assert "cancelled" in {c.outcome for c in calls}
