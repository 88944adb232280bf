"""The run folder's raw data as the report needs it: metadata, plan, ticks, incidents, phases.

:func:`load_run` reads ``DIR/raw`` once (``meta.json`` is required, everything else may be
missing from a run that stopped early); :func:`phases` and :func:`incidents` fold it into
the report's ``phases`` and ``incidents`` lists, in a stable order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from pipeline.campaign.profile import Plan
from pipeline.campaign.raw import IncidentRun, LoadSummary, LoadTick, RunMeta, read_jsonl

__all__ = ["Band", "ReportError", "RunData", "bands", "incidents", "jsonable", "load_run", "phases"]

T = TypeVar("T")


class ReportError(ValueError):
    """The run folder or the judgement cannot make a report; the message says which part."""


@dataclass(frozen=True)
class RunData:
    raw_dir: Path
    meta: RunMeta
    plan: Plan | None
    ticks: list[LoadTick]
    incident_runs: list[IncidentRun]
    load_summary: LoadSummary | None

    @property
    def t0(self) -> float:
        """Run time 0; a run that failed before its load began has only its start time."""
        return self.meta.t0 if self.meta.t0 > 0 else self.meta.started_at

    @property
    def ended_at(self) -> float:
        """When the run ended: its own record, else its last tick, else its start."""
        if self.meta.ended_at is not None:
            return self.meta.ended_at
        return self.ticks[-1].t if self.ticks else self.meta.started_at


@dataclass(frozen=True)
class Band:
    """An incident as the plots shade it, in seconds from t0."""

    id: str
    kind: str
    start_s: float
    end_s: float


def load_run(run_dir: Path) -> RunData:
    raw_dir = run_dir / "raw"
    meta = _decode(raw_dir / "meta.json", RunMeta, required=True)
    assert meta is not None
    return RunData(
        raw_dir=raw_dir,
        meta=meta,
        plan=_decode(raw_dir / "plan.json", Plan, required=False),
        ticks=_records(raw_dir / "load.jsonl", LoadTick),
        incident_runs=_records(raw_dir / "incidents.jsonl", IncidentRun),
        load_summary=_decode(raw_dir / "load_summary.json", LoadSummary, required=False),
    )


def phases(run: RunData) -> list[dict[str, Any]]:
    """The plan's phases with what the load generator scheduled, started and dropped in each."""
    rows: dict[str, dict[str, Any]] = {}
    if run.plan is not None:
        plan = run.plan
        for name, start, end in (
            ("warmup", 0.0, plan.ab_start_s),
            ("ab", plan.ab_start_s, plan.load_start_s),
            ("load", plan.load_start_s, plan.load_end_s),
            ("drain", plan.load_end_s, plan.total_s),
        ):
            rows[name] = {"name": name, "start_s": start, "end_s": end}
    ticked: dict[str, list[LoadTick]] = {}
    for tick in run.ticks:
        ticked.setdefault(tick.phase, []).append(tick)
    for name, ticks in ticked.items():
        row = rows.setdefault(name, {"name": name})
        row["ticks"] = len(ticks)
        row["target_rate_mean"] = sum(t.target_rate for t in ticks) / len(ticks)
        row["achieved_rate_mean"] = sum(t.started for t in ticks) / len(ticks)
        row["started_ticks"] = sum(t.started for t in ticks)
        row["completed"] = sum(t.completed for t in ticks)
        row["dropped_ticks"] = sum(t.dropped for t in ticks)
    if run.load_summary is not None:
        for name, summary in run.load_summary.phases.items():
            row = rows.setdefault(name, {"name": name})
            row["scheduled"] = summary.scheduled
            row["started"] = summary.started
            row["dropped_iterations"] = summary.dropped_iterations
            row["first_dropped_at_s"] = [t - run.t0 for t in summary.first_dropped_at]
    order = ("warmup", "ab", "load", "drain")
    return sorted(rows.values(), key=lambda r: (_rank(order, r["name"]), r["name"]))


def incidents(run: RunData, judged: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every planned incident, what became of it (raw record) and its judgement, merged by id.

    A planned incident with no record did not run (the run ended before it): it says so.
    """
    merged: dict[str, dict[str, Any]] = {}
    for plan_incident in run.plan.incidents if run.plan is not None else ():
        merged[plan_incident.id] = {
            "id": plan_incident.id,
            "kind": plan_incident.kind,
            "planned_start_s": plan_incident.start_s,
            "planned_end_s": plan_incident.end_s,
            "route": plan_incident.route,
            "expect_alerts": list(plan_incident.expect_alerts),
            "ran": False,
            "reason": "no record of it: the run ended before it",
        }
    for record in run.incident_runs:
        entry = merged.setdefault(record.id, {})
        entry.update(msgspec.to_builtins(record))
        entry.setdefault("reason", None)
        if entry.get("ran"):
            entry["reason"] = record.reason
    for index, judgement in enumerate(judged):
        if not isinstance(judgement, Mapping):
            raise ReportError(f"judgement incidents[{index}] is not an object")
        key = str(judgement.get("id", f"judged-{index:02d}"))
        merged.setdefault(key, {"id": key}).update(judgement)
    for key, entry in merged.items():
        for field in ("kind", "ran"):
            if field not in entry:
                raise ReportError(f"incident {key!r}: no {field!r} in the raw data or judgement")
        started, ended = entry.get("started_at"), entry.get("ended_at")
        if entry["ran"] and isinstance(started, int | float):
            entry["start_s"] = round(started - run.t0, 3)
            end = ended if isinstance(ended, int | float) else run.ended_at
            entry["end_s"] = round(end - run.t0, 3)
        else:
            entry["start_s"] = entry.get("planned_start_s")
            entry["end_s"] = entry.get("planned_end_s")
    return sorted(merged.values(), key=lambda e: (_number(e.get("planned_start_s")), e["id"]))


def bands(incident_list: Sequence[Mapping[str, Any]]) -> list[Band]:
    """The incidents that ran, as plot bands."""
    return [
        Band(str(i["id"]), str(i["kind"]), float(i["start_s"]), float(i["end_s"]))
        for i in incident_list
        if i.get("ran")
        and isinstance(i.get("start_s"), int | float)
        and isinstance(i.get("end_s"), int | float)
    ]


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types, deterministic: sets sorted, non-finite floats None."""
    if isinstance(value, msgspec.Struct):
        return jsonable(msgspec.to_builtins(value))
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


def _rank(order: Sequence[str], name: str) -> int:
    return order.index(name) if name in order else len(order)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.inf


def _decode(path: Path, type_: type[T], *, required: bool) -> T | None:
    if not path.exists():
        if required:
            raise ReportError(f"{path}: missing (is {path.parent.parent} a campaign run folder?)")
        return None
    try:
        return msgspec.json.decode(path.read_bytes(), type=type_)
    except (OSError, msgspec.DecodeError) as exc:
        raise ReportError(f"{path}: cannot read it as {type_.__name__}: {exc}") from exc


def _records(path: Path, type_: type[T]) -> list[T]:
    try:
        return list(read_jsonl(path, type_))
    except (OSError, msgspec.DecodeError) as exc:
        raise ReportError(f"{path}: cannot read it as {type_.__name__} lines: {exc}") from exc
