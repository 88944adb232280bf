"""Synthetic campaign run folders for the checker's tests, written with raw.py's writers.

:func:`write_run` writes a complete, deterministic ``raw/`` of a short run (one service, two
routes, 20 calls/s, an HTTP 5xx burst that raises its alert, Kafka down, RGW down) in which
every invariant and SLO holds. :class:`RunSpec`'s knobs make it known-bad in one way each:
a sink that loses critical events, a probe sink that drops events, duplicates in RGW,
invalid ids, growing RSS, probe overhead, a missing alert, an incomplete run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from hdrh.histogram import HdrHistogram
from msgspec.structs import replace

from pipeline.campaign.profile import Plan, parse_plan
from pipeline.campaign.raw import (
    AlertSeen,
    CallRecord,
    IncidentRun,
    KafkaEvent,
    KafkaSummary,
    LoadSummary,
    LoadTick,
    PhaseLoad,
    RunMeta,
    Sample,
    StoredEvent,
    StoredObject,
    WsClientSummary,
    WsMessage,
    read_json,
    write_json,
    write_jsonl,
)

__all__ = ["PROFILE", "RULES", "T0", "RunSpec", "plan", "write_run"]

T0 = 1_700_000_000.0
RULES = Path(__file__).resolve().parents[2] / "tables" / "defaults" / "slo-rules.toml"
PROFILE = """
version = 1
name = "synthetic"
seed = 1
duration_s = 120
[load]
warmup_s = 2
ab_phase_s = 20
ab_rate = 20
drain_s = 5
tiers = [{ at = 0, rate = 20 }]
[services]
count = 1
routes = [{ template = "/users/{id}", weight = 1 }, { template = "/search", weight = 1 }]
[[incident]]
kind = "http_5xx"
start = 10
end = 20
route = "/search"
expect_alerts = ["error-rate-fast-burn"]
[[incident]]
kind = "kafka_down"
start = 40
end = 50
[[incident]]
kind = "rgw_down"
start = 70
end = 80
"""


@dataclass(frozen=True)
class RunSpec:
    """One knob per way a run can go wrong; the defaults make a run where everything holds."""

    lose_critical: int = 0
    """Critical events the RGW sink never wrote (missing from listing and replay)."""
    drop_kafka_events: int = 0
    """Attempt events a probe sink dropped (not counted by the emitter unless drops_counted)."""
    drops_counted: bool = False
    error_burst: tuple[float, float] | None = None
    """Run-time seconds (from t0) in which /users/{id} fails outside any incident."""
    rgw_duplicates: int = 0
    """Critical events written twice to RGW."""
    invalid_trace_ids: int = 0
    """Kafka events whose trace_id is not 32 lowercase hex."""
    rss_growth_mib_per_min: float = 0.0
    ab_overhead: float = 0.02
    alert_fires: bool = True
    complete: bool = True


def plan() -> Plan:
    return parse_plan(PROFILE, where="tests/campaign/runs.py")


def write_run(root: Path, spec: RunSpec = RunSpec()) -> Path:
    """Write ``root/raw`` for ``spec``; returns the raw folder."""
    raw = root / "raw"
    p = plan()
    rng = random.Random(7)
    write_json(raw / "plan.json", p)
    end = T0 + p.total_s
    meta = RunMeta(
        profile=p.name,
        profile_path="synthetic.toml",
        profile_sha256=p.sha256,
        quick=False,
        seed=p.seed,
        t0=T0,
        started_at=T0 - 5,
        ended_at=end,
        complete=spec.complete,
        stop_reason=None if spec.complete else "interrupted",
    )
    write_json(raw / "meta.json", meta)
    bands = {i.kind: (T0 + i.start_s, T0 + i.end_s, i) for i in p.incidents}
    incidents = [
        IncidentRun(
            id=i.id,
            kind=i.kind,
            planned_start_s=i.start_s,
            planned_end_s=i.end_s,
            ran=True,
            started_at=T0 + i.start_s,
            ended_at=T0 + i.end_s,
            route=i.route,
            expect_alerts=list(i.expect_alerts),
        )
        for i in p.incidents
    ]
    write_jsonl(raw / "incidents.jsonl", incidents)

    burst = (
        None if spec.error_burst is None else (T0 + spec.error_burst[0], T0 + spec.error_burst[1])
    )
    calls, events = _calls_and_events(p, rng, bands["http_5xx"][:2], burst)
    write_jsonl(raw / "calls.jsonl", calls)
    for index in range(spec.invalid_trace_ids):
        events[index].trace_id = events[index].trace_id.upper()
    kept = events[spec.drop_kafka_events :]
    write_jsonl(raw / "kafka_events.jsonl", kept)
    write_json(
        raw / "kafka_summary.json",
        KafkaSummary(
            records=len(kept),
            events=len(kept),
            invalid_events=0,
            invalid_records=0,
            dead_letters=0,
            dead_letter_reasons={},
        ),
    )
    critical = [e for e in kept if e.severity == "critical"]
    stored = [
        StoredEvent(
            request_id=e.request_id,
            trace_id=e.trace_id,
            service=e.service,
            severity=e.severity,
            key=f"obj-{n // 50:03d}",
        )
        for n, e in enumerate(critical[spec.lose_critical :])
    ]
    stored += [replace(s, key="obj-dup") for s in stored[: spec.rgw_duplicates]]
    write_jsonl(raw / "rgw_listing.jsonl", stored)
    write_jsonl(raw / "rgw_replay.jsonl", [replace(s, key="") for s in stored])
    keys = sorted({s.key for s in stored})
    write_jsonl(
        raw / "rgw_objects.jsonl",
        [
            StoredObject(key=k, size=1000, events=sum(s.key == k for s in stored), checksum_ok=True)
            for k in keys
        ],
    )

    _write_ws(raw, kept)
    _write_alerts(raw, spec, bands["http_5xx"])
    _write_samples(raw, p, spec)
    _write_load(raw, p, spec, calls, len(kept))
    if spec.drops_counted:
        summary = read_json(raw / "load_summary.json", LoadSummary)
        summary.emitter["dropped_total"] = spec.drop_kafka_events
        write_json(raw / "load_summary.json", summary)
    return raw


def _hex(rng: random.Random, bits: int) -> str:
    return f"{rng.getrandbits(bits) | 1:0{bits // 4}x}"


def _calls_and_events(
    p: Plan,
    rng: random.Random,
    fault: tuple[float, float],
    burst: tuple[float, float] | None,
) -> tuple[list[CallRecord], list[KafkaEvent]]:
    calls: list[CallRecord] = []
    events: list[KafkaEvent] = []
    step = 1.0 / 20
    t = T0
    n = 0
    while t < T0 + p.load_end_s:
        phase = p.phase_at(t - T0)
        route = p.routes[n % 2].template
        # Alternate probed and control calls in the A/B phase and around outages, as the
        # load generator does.
        around_outage = any(
            i.start_s - (i.end_s - i.start_s) <= t - T0 < i.end_s
            for i in p.incidents
            if i.kind in ("kafka_down", "rgw_down")
        )
        probed = not ((phase == "ab" or around_outage) and n % 2)
        broken = route == "/search" and fault[0] <= t < fault[1]
        if burst is not None and route == "/users/{id}":
            broken = broken or burst[0] <= t < burst[1]
        attempts = 2 if broken else 1
        latency = rng.lognormvariate(1.6, 0.3)
        trace = _hex(rng, 128)
        calls.append(
            CallRecord(
                trace_id=trace,
                service=p.services[0],
                route=route,
                phase=phase,
                probed=probed,
                intended_at=t,
                started_at=t,
                latency_ms=latency,
                attempts=attempts,
                outcome="http_error" if broken else "ok",
                status=503 if broken else 200,
            )
        )
        for attempt in range(attempts if probed else 0):
            events.append(
                KafkaEvent(
                    request_id=_hex(rng, 64),
                    trace_id=trace,
                    logical_request_id=trace[:16],
                    attempt=attempt + 1,
                    service=p.services[0],
                    route=route,
                    severity="critical" if broken or n % 10 == 0 else "info",
                    outcome="http_error" if broken else "ok",
                    started_at=t,
                    elapsed_ms=latency,
                    partition=n % 4,
                    offset=len(events),
                )
            )
        n += 1
        t = T0 + n * step
    return calls, events


def _write_ws(raw: Path, events: list[KafkaEvent]) -> None:
    messages = [
        WsMessage(
            client="ws-0",
            type="event",
            received_at=e.started_at + e.elapsed_ms / 1e3 + 0.05,
            trace_id=e.trace_id,
            request_id=e.request_id,
            ended_at=e.started_at + e.elapsed_ms / 1e3,
        )
        for e in events
    ]
    messages.append(WsMessage(client="ws-slow", type="dropped", received_at=T0 + 60, count=3))
    write_jsonl(raw / "ws.jsonl", messages)
    write_jsonl(
        raw / "ws_clients.jsonl",
        [
            WsClientSummary(
                client="ws-0",
                slow=False,
                received=len(messages) - 1,
                events=len(messages) - 1,
                dropped_notified=0,
                reconnects=0,
            ),
            WsClientSummary(
                client="ws-slow", slow=True, received=1, events=0, dropped_notified=3, reconnects=0
            ),
        ],
    )


def _write_alerts(raw: Path, spec: RunSpec, band: tuple[float, float, object]) -> None:
    start, end, _ = band
    base = {
        "schema_version": 1,
        "alert_id": "5be3a0c43c7a2b3e1b0a5d9d63d0d3c2",
        "rule": "error-rate-fast-burn",
        "service": "svc-00",
        "route": "/search",
        "method": "GET",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "example_trace_ids": ["4bf92f3577b34da6a3ce929d0e0e4736"],
    }
    alerts = [
        AlertSeen(
            received_at=start + 4,
            record=base
            | {"status": "firing", "fired_at": start + 3, "request_id": "a1b2c3d4e5f60718"},
        ),
        AlertSeen(
            received_at=end + 31,
            record=base
            | {
                "status": "resolved",
                "fired_at": start + 3,
                "resolved_at": end + 30,
                "request_id": "a1b2c3d4e5f60719",
            },
        ),
    ]
    write_jsonl(raw / "alerts.jsonl", alerts if spec.alert_fires else [])


def _write_samples(raw: Path, p: Plan, spec: RunSpec) -> None:
    rng = random.Random(3)
    samples = []
    for second in range(int(p.total_s)):
        t = T0 + second + 0.5
        growth = spec.rss_growth_mib_per_min * second / 60 * 1024 * 1024
        samples.append(
            Sample(
                t=t,
                workers={"worker-0": {"ready": True, "api_latency_ms": 4 + rng.random()}},
                processes={
                    "worker-0": {"rss_bytes": 150e6 + growth + rng.uniform(-1e5, 1e5), "cpu_s": t},
                    "load": {"rss_bytes": 90e6 + rng.uniform(-1e5, 1e5), "cpu_s": t},
                },
                queues={"emitter": {"depth": float(second % 7), "cap": 10_000.0, "drops": 0.0}},
            )
        )
    write_jsonl(raw / "samples.jsonl", samples)


def _write_load(raw: Path, p: Plan, spec: RunSpec, calls: list[CallRecord], sent: int) -> None:
    ticks = [
        LoadTick(
            t=T0 + s + 1,
            phase=p.phase_at(s),
            target_rate=20,
            started=20,
            completed=20,
            dropped=0,
            in_flight=1,
        )
        for s in range(int(p.load_end_s))
    ]
    write_jsonl(raw / "load.jsonl", ticks)
    rng = random.Random(5)
    for name, scale in (("ab-probed", 1 + spec.ab_overhead), ("ab-baseline", 1.0)):
        histogram = HdrHistogram(1, 60_000_000, 3)
        for _ in range(500):
            histogram.record_value(int(5000 * scale * rng.uniform(0.9, 1.1)))
        (raw / "latency").mkdir(exist_ok=True)
        (raw / "latency" / f"{name}.hdr").write_bytes(histogram.encode())
    phases = {
        name: PhaseLoad(scheduled=n, started=n, dropped_iterations=0)
        for name in ("warmup", "ab", "load")
        for n in [sum(c.phase == name for c in calls)]
    }
    write_json(
        raw / "load_summary.json",
        LoadSummary(
            phases=phases,
            emitter={"sent_events": sent, "dropped_total": 0},
            probe={"internal_errors": 0},
            histograms={
                "ab-probed": "latency/ab-probed.hdr",
                "ab-baseline": "latency/ab-baseline.hdr",
            },
        ),
    )
