"""The alerts against the injected incidents, and the load's own account.

For each incident that expects alerts (its profile's ``expect_alerts``, rule names of the rules
file): did a FIRING alert of that rule (on the incident's route when it has one) fire between
the incident's start and its end + the rule's ``for_s`` + ``judge.alert_grace_s``
(``alert_verdict``: pass/fail; unknown if the incident did not run), and did that alert
resolve after the end (``resolve_verdict``: unknown when the run ended before the rule's
short view + ``resolve_after_s`` + grace had passed, and it says so). A FIRING alert with no
incident around it (from an incident's start to its end + the short view + ``for_s`` +
grace) is *unexplained*: any makes ``alerts.verdict`` fail; none is a pass only when the
alerts topic was read (``alerts.jsonl`` exists) in a run that made probed calls.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

from pipeline.campaign._checks_common import (
    FAIL,
    FIRST,
    PASS,
    UNKNOWN,
    Band,
    RawRun,
    incident_bands,
    worst,
)
from pipeline.campaign.raw import IncidentRun
from tables.slo_rules import VIEW_SECONDS, SloRule

__all__ = ["check_alerts", "check_incidents", "summarize_load"]

_DEFAULT_SHORT_S: Final = 60.0


def _firing(run: RawRun) -> list[dict[str, Any]]:
    out = []
    for seen in run.alerts:
        r = seen.record
        if r.get("status") != "firing":
            continue
        at = r.get("fired_at")
        out.append(
            {
                "rule": r.get("rule"),
                "alert_id": r.get("alert_id"),
                "service": r.get("service"),
                "route": r.get("route"),
                "fired_at": at if isinstance(at, int | float) else seen.received_at,
            }
        )
    return out


def _resolved(run: RawRun) -> dict[str, float]:
    """alert_id -> when it resolved."""
    out: dict[str, float] = {}
    for seen in run.alerts:
        r = seen.record
        if r.get("status") == "resolved" and isinstance(r.get("alert_id"), str):
            at = r.get("resolved_at")
            out[r["alert_id"]] = at if isinstance(at, int | float) else seen.received_at
    return out


def _short(rule: SloRule | None) -> float:
    """How long an incident keeps a rule breaching after its end: its longest short view
    (a breach and a firing alert's hold both need the short view over the line)."""
    if rule is None:
        return _DEFAULT_SHORT_S
    return float(max(VIEW_SECONDS[w.short] for w in rule.windows))


def check_incidents(run: RawRun, rules: dict[str, SloRule]) -> list[dict[str, Any]]:
    """Every incident: whether it ran, its band, the alerts it raised and their verdicts."""
    grace = run.plan.judge.alert_grace_s if run.plan is not None else 0.0
    firing, resolved = _firing(run), _resolved(run)
    records = {r.id: r for r in run.incidents}
    planned = {i.id: i for i in run.plan.incidents} if run.plan is not None else {}
    out: list[dict[str, Any]] = []
    for band in incident_bands(run):
        record = records.get(band.id)
        expect = list(
            record.expect_alerts if record is not None else planned[band.id].expect_alerts
        )
        reach = max((rules[n].for_s for n in expect if n in rules), default=0.0)
        raised = [
            a | {"resolved_at": resolved.get(str(a["alert_id"]))}
            for a in firing
            if band.start <= a["fired_at"] <= band.end + reach + grace and _on_route(band, a)
        ]
        entry: dict[str, Any] = {
            "id": band.id,
            "kind": band.kind,
            "ran": band.ran,
            "reason": record.reason if record is not None else "no record: the run ended before it",
            "start": band.start,
            "end": band.end,
            "expect_alerts": expect,
            "alerts_raised": raised,
            "alert_verdict": None,
            "resolve_verdict": None,
        }
        if expect:
            checks = [_expected(run, band, rules.get(name), name, raised, grace) for name in expect]
            entry["alert_checks"] = checks
            entry["alert_verdict"] = worst(c["fired"] for c in checks)
            entry["resolve_verdict"] = worst(c["resolved"] for c in checks)
            entry["alert_detail"] = "; ".join(c["detail"] for c in checks)
        if band.kind == "garbage_records":
            entry |= _dead_lettered(run, record)
        out.append(entry)
    return out


_GARBAGE: Final = "garbage_records"


def _dead_lettered(run: RawRun, record: IncidentRun | None) -> dict[str, Any]:
    """Garbage on the probe topic: every record injected (by every such incident) is in the
    dead-letter topic with a reason, and the probe's own events are not (their count is
    I1's). ``effect_verdict`` unknown when it did not run or the topic was not read."""
    injected = sum(
        int(r.detail.get("garbage_records", 0)) for r in run.incidents if r.kind == _GARBAGE
    )
    summary = run.kafka_summary
    if record is None or not record.ran or summary is None or injected == 0:
        return {"effect_verdict": UNKNOWN, "effect_detail": "no garbage injected or no DLQ read"}
    verdict = PASS if summary.dead_letters == injected else FAIL
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary.dead_letter_reasons.items()))
    return {
        "effect_verdict": verdict,
        "effect_detail": (
            f"{injected} garbage records injected, {summary.dead_letters} dead letters "
            f"({reasons or 'none'})"
        ),
    }


def _on_route(band: Band, alert: dict[str, Any]) -> bool:
    return band.route is None or alert.get("route") in (band.route, "*")


def _expected(
    run: RawRun,
    band: Band,
    rule: SloRule | None,
    name: str,
    raised: list[dict[str, Any]],
    grace: float,
) -> dict[str, Any]:
    if rule is None:
        detail = f"{name}: no such rule in the rules file"
        return {"rule": name, "fired": FAIL, "resolved": UNKNOWN, "detail": detail}
    if not band.ran:
        detail = f"{name}: the incident did not run"
        return {"rule": name, "fired": UNKNOWN, "resolved": UNKNOWN, "detail": detail}
    deadline = band.end + rule.for_s + grace
    ours = [a for a in raised if a["rule"] == name and a["fired_at"] <= deadline]
    if not run.has("alerts.jsonl"):
        detail = f"{name}: the alerts topic was not read"
        return {"rule": name, "fired": UNKNOWN, "resolved": UNKNOWN, "detail": detail}
    if not ours:
        detail = f"{name}: no alert between the start and {deadline - band.start:.0f} s after it"
        return {"rule": name, "fired": FAIL, "resolved": UNKNOWN, "detail": detail}
    first = ours[0]
    fired = f"{name} fired {first['fired_at'] - band.start:.1f} s after the start"
    done = [a for a in ours if a["resolved_at"] is not None and a["resolved_at"] >= band.end]
    resolve_by = band.end + _short(rule) + rule.resolve_after_s + grace
    ended = run.ended_at
    if done:
        resolved, say = PASS, f"resolved {done[0]['resolved_at'] - band.end:.0f} s after the end"
    elif ended is not None and ended < resolve_by:
        resolved = UNKNOWN
        say = (
            f"not resolved yet: the run ended {resolve_by - ended:.0f} s before it could "
            f"(short view + resolve_after_s {rule.resolve_after_s:.0f} s + grace)"
        )
    else:
        resolved, say = FAIL, f"never resolved by {resolve_by - band.end:.0f} s after the end"
    return {"rule": name, "fired": PASS, "resolved": resolved, "detail": f"{fired}, {say}"}


def check_alerts(run: RawRun, rules: dict[str, SloRule]) -> dict[str, Any]:
    """All alerts seen, and the FIRING ones no incident explains."""
    grace = run.plan.judge.alert_grace_s if run.plan is not None else 0.0
    bands = incident_bands(run)
    firing = _firing(run)
    unexplained = []
    for alert in firing:
        rule = rules.get(str(alert["rule"]))
        reach = _short(rule) + (rule.for_s if rule is not None else 0.0) + grace
        if not any(b.start <= alert["fired_at"] <= b.end + reach for b in bands):
            unexplained.append(alert)
    statuses = Counter(str(a.record.get("status")) for a in run.alerts)
    out: dict[str, Any] = {
        "total": len(run.alerts),
        "by_status": dict(statuses),
        "unexplained_count": len(unexplained),
        "unexplained": unexplained[:FIRST],
    }
    if unexplained:
        first = unexplained[0]
        detail = (
            f"{len(unexplained)} alerts fired with no incident around them; first "
            f"{first['rule']} on {first['service']} {first['route']}"
        )
        return out | {"verdict": FAIL, "detail": detail}
    if not run.has("alerts.jsonl"):
        return out | {"verdict": UNKNOWN, "detail": "the alerts topic was not read"}
    if not any(c.probed for c in run.calls):
        return out | {"verdict": UNKNOWN, "detail": "no probed call: nothing could have alerted"}
    return out | {"verdict": PASS, "detail": f"{len(firing)} alerts fired, all during incidents"}


def summarize_load(run: RawRun) -> dict[str, Any]:
    """What the load generator made, per phase, with k6's dropped_iterations."""
    summary = run.load_summary
    phases: dict[str, Any] = {}
    for tick in run.ticks:
        row = phases.setdefault(tick.phase, {"seconds": 0, "started": 0, "target": 0.0})
        row["seconds"] += 1
        row["started"] += tick.started
        row["target"] += tick.target_rate
    for row in phases.values():
        row["target_rate"] = round(row.pop("target") / row["seconds"], 2)
        row["achieved_rate"] = round(row["started"] / row["seconds"], 2)
    if summary is not None:
        for name, phase in summary.phases.items():
            phases.setdefault(name, {}).update(
                scheduled=phase.scheduled,
                started=phase.started,
                dropped_iterations=phase.dropped_iterations,
                first_dropped_at=phase.first_dropped_at[:FIRST],
            )
    seconds = sum(row.get("seconds", 0) for row in phases.values())
    started = sum(t.started for t in run.ticks)
    return {
        "calls": len(run.calls),
        "probed_calls": sum(1 for c in run.calls if c.probed),
        "outcomes": dict(Counter(c.outcome for c in run.calls)),
        "dropped_iterations": (
            sum(p.dropped_iterations for p in summary.phases.values()) if summary else None
        ),
        "achieved_rate": round(started / seconds, 2) if seconds else None,
        "complete": summary.complete if summary is not None else None,
        "emitter": dict(summary.emitter) if summary is not None else {},
        "probe": dict(summary.probe) if summary is not None else {},
        "phases": phases,
    }
