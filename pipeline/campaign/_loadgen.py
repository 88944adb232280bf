"""The load generator itself: schedule, calls, ground truth, ticks and summary of one run.

See :mod:`pipeline.campaign.load` for the process around it and its contract. Everything runs
on the caller's event loop: one task per call, no thread per call (the emitters each have
their background thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import msgspec
import psutil

from pipeline.campaign._arrivals import BURST_PHASE, Arrival, burst_rate_at, iter_arrivals
from pipeline.campaign._groundtruth import attempts_made, outcome_of, outcome_of_status
from pipeline.campaign._loadclients import ServiceClients, build_clients, sum_emitter_stats
from pipeline.campaign._loadstats import CallWriter, LatencyBook, Second, histogram_name
from pipeline.campaign.profile import Plan
from pipeline.campaign.raw import CallRecord, LoadSummary, LoadTick, PhaseLoad, write_json
from pipeline.probe.emitter import KafkaEmitter
from pipeline.probe.sink import EventSink
from pipeline.probe.tracecontext import format_traceparent, new_span_id, new_trace_id

__all__ = ["FIRST_DROPPED_KEPT", "LoadGenerator", "drain_bound_s"]

FIRST_DROPPED_KEPT: Final = 10
_YIELD_EVERY: Final = 64  # arrivals started back to back (behind schedule) between two yields
_CLOSE_TIMEOUT_S: Final = 15.0  # the runner waits 60 s for this process to end
_CLOSE_TIMEOUT_INTERRUPTED_S: Final = 3.0
_tick_encoder = msgspec.json.Encoder()


def drain_bound_s(plan: Plan) -> float:
    """The longest a call started before the end of the load can still run: every attempt
    at its connect, pool and read timeouts, the backoffs, a margin; at most 60 s."""
    c = plan.client
    per_attempt = c.connect_timeout_s * 2 + c.read_timeout_s * 2
    backoff = sum(min(2.0, math.ldexp(c.backoff_base_s, i)) for i in range(c.max_attempts))
    return min(60.0, c.max_attempts * per_attempt + backoff + 2.0)


class LoadGenerator:
    """One run of the load: :meth:`run` returns the summary it wrote."""

    def __init__(
        self,
        plan: Plan,
        *,
        t0: float,
        upstream: str,
        out: Path,
        sink_for: Callable[[str], tuple[EventSink, KafkaEmitter | None]],
        stdout: Callable[[bytes], None] | None = None,
    ) -> None:
        self.plan = plan
        self.t0 = t0
        self.out = out
        self._arrivals: Iterator[Arrival] = iter_arrivals(plan)  # checks the burst params
        self.clients: dict[str, ServiceClients] = build_clients(plan, upstream, sink_for)
        self._stdout = stdout
        self.calls = CallWriter(out / "calls.jsonl")
        self.latency = LatencyBook()
        self.phases: dict[str, PhaseLoad] = {
            name: PhaseLoad(scheduled=0, started=0, dropped_iterations=0)
            for name in ("warmup", "ab", "load")
        }
        self._second = Second()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.interrupted = False
        self._process = psutil.Process()
        self._mono0 = 0.0

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> LoadSummary:
        loop = asyncio.get_running_loop()
        self._mono0 = loop.time() - (time.time() - self.t0)
        (self.out / "load.jsonl").touch()
        scheduler = asyncio.ensure_future(self._schedule())
        ticker = asyncio.ensure_future(self._tick_every_second())
        stopper = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({scheduler, stopper}, return_when=asyncio.FIRST_COMPLETED)
        scheduler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scheduler
        deadline = loop.time() + (0.0 if self.interrupted else drain_bound_s(self.plan))
        while self._in_flight and loop.time() < deadline and not self._stopping.is_set():
            await asyncio.wait(set(self._in_flight), timeout=0.2)
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        stopper.cancel()
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        self._tick(time.time())  # the last, partial second: totals add up
        return await self._finish()

    def stop(self) -> None:
        """SIGTERM/SIGINT: start no call, cancel those in flight, write what was seen."""
        self.interrupted = True
        self._stopping.set()

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        mono0 = self._mono0
        back_to_back = 0
        for arrival in self._arrivals:
            due = mono0 + arrival.at_s
            delay = due - loop.time()
            if delay > 0.0005:
                back_to_back = 0
                await asyncio.sleep(delay)
            else:
                back_to_back += 1
                if back_to_back >= _YIELD_EVERY:
                    back_to_back = 0
                    await asyncio.sleep(0)
            self._start(arrival, due)
        # The load phase lasts to its end, also after its last arrival.
        await asyncio.sleep(max(0.0, mono0 + self.plan.load_end_s - loop.time()))

    def _start(self, arrival: Arrival, due: float) -> None:
        key = BURST_PHASE if arrival.attack else arrival.phase
        phase = self.phases.get(key)
        if phase is None:
            phase = self.phases[key] = PhaseLoad(scheduled=0, started=0, dropped_iterations=0)
        phase.scheduled += 1
        if len(self._in_flight) >= self.plan.max_in_flight:
            phase.dropped_iterations += 1
            self._second.dropped += 1
            if len(phase.first_dropped_at) < FIRST_DROPPED_KEPT:
                phase.first_dropped_at.append(round(self.t0 + arrival.at_s, 6))
            return
        phase.started += 1
        self._second.started += 1
        task = asyncio.ensure_future(self._call(arrival, due))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _call(self, arrival: Arrival, due: float) -> None:
        """One logical request; never raises (a cancellation is recorded as ``cancelled``)."""
        loop = asyncio.get_running_loop()
        clients = self.clients[arrival.service]
        probed = arrival.probed
        client, counter = clients.client(probed)
        trace_id = new_trace_id()
        counter.expect(trace_id)
        gauge = clients.in_flight
        pool_wait = gauge[probed] >= self.plan.client.max_connections
        gauge[probed] += 1
        started_at = time.time()
        status: int | None = None
        error: BaseException | None = None
        try:
            response = await client.get(
                arrival.path, headers={"traceparent": format_traceparent(trace_id, new_span_id())}
            )
            status = response.status_code
            outcome = outcome_of_status(status)
        except BaseException as exc:  # noqa: BLE001 - every ending is a record, cancel included
            error = exc
            outcome = outcome_of(exc)
        end = loop.time()
        gauge[probed] -= 1
        latency_s = end - due
        attempts = attempts_made(counter.take(trace_id), error)  # baseline: its sends
        self._second.completed_call(outcome, attempts, latency_s, pool_wait=pool_wait)
        self.latency.record(histogram_name(arrival.phase, probed, arrival.attack), latency_s)
        self.calls.add(
            CallRecord(
                trace_id=trace_id,
                service=arrival.service,
                route=arrival.route,
                phase=arrival.phase,
                probed=probed,
                intended_at=round(self.t0 + arrival.at_s, 6),
                started_at=round(started_at, 6),
                latency_ms=round(latency_s * 1000.0, 3),
                attempts=attempts,
                outcome=outcome,
                status=status,
                cardinality_attack=arrival.attack,
            )
        )

    # -- every second ----------------------------------------------------------------------

    async def _tick_every_second(self) -> None:
        k = max(1, int(time.time() - self.t0) + 1)
        while True:
            await asyncio.sleep(max(0.0, self.t0 + k - time.time()))
            self._tick(self.t0 + k)
            k = max(k + 1, int(time.time() - self.t0) + 1)

    def _tick(self, now: float) -> None:
        second, self._second = self._second, Second()
        run_s = max(0.0, now - self.t0 - 0.5)
        p50, p95, p99 = second.percentiles_ms()
        breakers: dict[str, str] = {}
        for clients in self.clients.values():
            with contextlib.suppress(Exception):  # a view for the display: never fatal
                breakers.update(clients.breaker_states())
        emitters = [c.emitter.stats() for c in self.clients.values() if c.emitter is not None]
        tick = LoadTick(
            t=round(now, 3),
            phase=self.plan.phase_at(run_s),
            target_rate=self.plan.rate_at(run_s) + burst_rate_at(self.plan, run_s),
            started=second.started,
            completed=second.completed,
            dropped=second.dropped,
            in_flight=len(self._in_flight),
            ok=second.ok,
            errors=second.errors,
            timeouts=second.timeouts,
            retries=second.retries,
            breaker_open=second.breaker_open,
            pool_waits=second.pool_waits,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            breakers=breakers,
            emitter=sum_emitter_stats(emitters),
            rss_bytes=self._process.memory_info().rss,
        )
        line = _tick_encoder.encode(tick) + b"\n"
        with (self.out / "load.jsonl").open("ab") as ticks:
            ticks.write(line)
        if self._stdout is not None:
            self._stdout(line)
        self.calls.flush()

    # -- the end ---------------------------------------------------------------------------

    async def _finish(self) -> LoadSummary:
        probe: dict[str, int] = {}
        for clients in self.clients.values():
            for name, value in clients.probe_counters().items():
                probe[name] = probe.get(name, 0) + value
            for counter in (clients.probed_counter, clients.baseline_counter):
                probe["loadgen_uncounted_attempts"] = (
                    probe.get("loadgen_uncounted_attempts", 0) + counter.unexpected
                )
                probe["loadgen_count_overflows"] = (
                    probe.get("loadgen_count_overflows", 0) + counter.overflows
                )
        await asyncio.gather(*(c.aclose_clients() for c in self.clients.values()))
        timeout = _CLOSE_TIMEOUT_INTERRUPTED_S if self.interrupted else _CLOSE_TIMEOUT_S
        finals = await asyncio.gather(
            *(c.emitter.aclose(timeout) for c in self.clients.values() if c.emitter is not None)
        )
        self.calls.close()
        probe["loadgen_calls_written"] = self.calls.written
        probe["loadgen_call_buffer_early_flushes"] = self.calls.early_flushes
        summary = LoadSummary(
            phases=self.phases,
            emitter=sum_emitter_stats(finals),
            probe=probe,
            histograms=self.latency.write(self.out / "latency"),
            complete=not self.interrupted,
        )
        write_json(self.out / "load_summary.json", summary)
        return summary
