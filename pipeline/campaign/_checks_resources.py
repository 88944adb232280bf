"""Invariant I3 (bounded resources) from the per-second samples and the drop counters.

Three parts, each ``pass``/``fail``/``unknown``, folded with :func:`worst`:

- memory: the least-squares RSS slope (MiB/min) of the project's processes (workers, the
  probed load generator; Kafka, Ceph and the rest are shown, not judged) over the steady
  part of the load phase (the load phase minus its first 20 %) is at most
  ``judge.rss_slope_max_mb_per_min``. A process restarted in that span (RSS falls by half or
  more, or a sampling gap over 5 s) is judged on its longest segment. Fewer than
  :data:`MIN_SAMPLES` samples: unknown.
- queues: no sampled queue's depth ever above its cap (figures without a cap: shown only).
- drops: drops counted == drops observed where both exist: the emitters' dropped counters vs
  the attempt events missing from Kafka; each WebSocket client's ``dropped`` notices vs its
  own tally.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Final

from pipeline.campaign._checks_common import FAIL, FIRST, PASS, UNKNOWN, RawRun, worst
from pipeline.campaign._checks_invariants import emitter_dropped

__all__ = ["MIN_SAMPLES", "check_i3", "rss_slope_mib_per_min"]

MIN_SAMPLES: Final = 10
"""Fewest steady-phase samples of a process for its RSS slope to be evidence."""
_MIB: Final = 1024 * 1024
_GAP_S: Final = 5.0


def rss_slope_mib_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t seconds, rss bytes) in MiB per minute; None under 2 points."""
    n = len(points)
    if n < 2:
        return None
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var <= 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60.0 / _MIB


def check_i3(run: RawRun, lost_attempts: int | None) -> dict[str, Any]:
    """Memory flat, queues under their caps, drops counted == drops observed."""
    title = "I3 bounded resources: flat memory, queues under their caps, every drop counted"
    memory = _memory(run)
    queues = _queues(run)
    drops = _drops(run, lost_attempts)
    parts = {"memory": memory, "queues": queues, "drops": drops}
    verdict = worst(p["verdict"] for p in parts.values())
    evidence = "; ".join(f"{name}: {p['detail']}" for name, p in parts.items())
    counts = {
        "processes": len(memory["processes"]),
        "queues": len(queues["queues"]),
        "samples": len(run.samples),
    }
    return {"title": title, "verdict": verdict, "evidence": evidence, "counts": counts, **parts}


def _memory(run: RawRun) -> dict[str, Any]:
    plan, t0 = run.plan, run.t0
    if plan is None or t0 is None:
        return {"verdict": UNKNOWN, "detail": "no plan or t0: no load phase", "processes": {}}
    start = t0 + plan.load_start_s + 0.2 * plan.load_s
    end = t0 + plan.load_end_s
    limit = plan.judge.rss_slope_max_mb_per_min
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for sample in run.samples:
        if start <= sample.t <= end:
            for name, figures in sample.processes.items():
                if "rss_bytes" in figures:
                    series[name].append((sample.t, float(figures["rss_bytes"])))
    processes: dict[str, Any] = {}
    for name, points in sorted(series.items()):
        segment = _longest_segment(points)
        slope = rss_slope_mib_per_min(segment) if len(segment) >= MIN_SAMPLES else None
        if slope is None:
            verdict = UNKNOWN
        else:
            verdict = PASS if slope <= limit else FAIL
        processes[name] = {
            "verdict": verdict,
            "slope_mib_per_min": None if slope is None else round(slope, 3),
            "samples": len(segment),
            "restarts": _restarts(points),
            "rss_first_mib": round(segment[0][1] / _MIB, 1) if segment else None,
            "rss_last_mib": round(segment[-1][1] / _MIB, 1) if segment else None,
        }
    for name, row in processes.items():
        if not _own(name):
            row["judged"] = False  # infrastructure: shown, not the project's invariant
    judged = {n: p for n, p in processes.items() if _own(n)}
    if not judged:
        return {"verdict": UNKNOWN, "detail": "no RSS sample in the steady phase", "processes": {}}
    verdict = worst(p["verdict"] for p in judged.values())
    over = [f"{n} {p['slope_mib_per_min']}" for n, p in judged.items() if p["verdict"] == FAIL]
    few = [n for n, p in judged.items() if p["verdict"] == UNKNOWN]
    if over:
        detail = f"RSS grows over {limit} MiB/min: " + ", ".join(over)
    elif few:
        detail = f"fewer than {MIN_SAMPLES} steady samples for " + ", ".join(few)
    else:
        steepest = max(p["slope_mib_per_min"] for p in judged.values())
        detail = (
            f"{len(judged)} processes of the project, steepest RSS slope {steepest} <= {limit} "
            f"MiB/min ({len(processes) - len(judged)} infrastructure processes shown, not judged)"
        )
    return {"verdict": verdict, "detail": detail, "limit": limit, "processes": processes}


def _own(process: str) -> bool:
    """The project's processes (workers, the probed load): Kafka, Ceph, Prometheus, Toxiproxy
    and the fault upstream are the test bench, their memory is not what I3 promises."""
    return process.startswith("worker-") or process == "load"


def _longest_segment(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    segments: list[list[tuple[float, float]]] = []
    for point in points:
        if segments and not _breaks(segments[-1][-1], point):
            segments[-1].append(point)
        else:
            segments.append([point])
    return max(segments, key=len) if segments else []


def _restarts(points: list[tuple[float, float]]) -> int:
    return sum(1 for a, b in zip(points, points[1:], strict=False) if _breaks(a, b))


def _breaks(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return b[0] - a[0] > _GAP_S or b[1] <= a[1] / 2


def _queues(run: RawRun) -> dict[str, Any]:
    seen: dict[str, dict[str, Any]] = {}
    for sample in run.samples:
        for name, figures in sample.queues.items():
            row = seen.setdefault(name, {"samples": 0, "max_depth": 0.0, "cap": None, "over": []})
            row["samples"] += 1
            depth, cap = figures.get("depth"), figures.get("cap")
            if depth is not None:
                row["max_depth"] = max(row["max_depth"], depth)
            if cap is not None:
                row["cap"] = cap if row["cap"] is None else min(row["cap"], cap)
                if depth is not None and depth > cap and len(row["over"]) < FIRST:
                    row["over"].append(sample.t)
            if "drops" in figures:
                row["drops"] = figures["drops"]
    for row in seen.values():
        over = row["over"]
        # A figure without a cap (a client's tally, records in open sink batches) is shown,
        # not judged: only a bound can be checked.
        row["verdict"] = FAIL if over else PASS if row["cap"] is not None else "info"
    capped = {n: r for n, r in seen.items() if r["verdict"] != "info"}
    if not capped:
        return {"verdict": UNKNOWN, "detail": "no queue with a cap was sampled", "queues": seen}
    verdict = worst(row["verdict"] for row in capped.values())
    over = [n for n, r in capped.items() if r["verdict"] == FAIL]
    capless = [n for n, r in seen.items() if r["verdict"] == "info"]
    if over:
        detail = "depth above cap: " + ", ".join(over)
    else:
        detail = f"{len(capped)} queues, never above their caps"
        if capless:
            detail += f" ({len(capless)} figures without a cap shown: {', '.join(capless)})"
    return {"verdict": verdict, "detail": detail, "queues": seen}


def _drops(run: RawRun, lost_attempts: int | None) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    summary = run.load_summary
    if summary is not None and lost_attempts is not None and run.has("kafka_events.jsonl"):
        counted = emitter_dropped(summary.emitter)
        checks["emitter"] = {
            "verdict": PASS if counted == lost_attempts else FAIL,
            "counted": counted,
            "observed": lost_attempts,
            "what": "emitter dropped counters vs attempt events missing from Kafka",
        }
    notices: dict[str, int] = defaultdict(int)
    for message in run.ws:
        if message.type == "dropped":
            notices[message.client] += message.count or 0
    for client in run.ws_clients:
        counted, observed = client.dropped_notified, notices.get(client.client, 0)
        checks[f"ws:{client.client}"] = {
            "verdict": PASS if counted == observed else FAIL,
            "counted": counted,
            "observed": observed,
            "what": "WebSocket client's tally vs the dropped notices it received",
        }
    if not checks:
        return {"verdict": UNKNOWN, "detail": "no drop counter to compare", "checks": {}}
    verdict = worst(c["verdict"] for c in checks.values())
    wrong = [
        f"{n} counted {c['counted']} observed {c['observed']}"
        for n, c in checks.items()
        if c["verdict"] == FAIL
    ]
    detail = "; ".join(wrong) if wrong else f"{len(checks)} counters match what was observed"
    return {"verdict": verdict, "detail": detail, "checks": checks}
