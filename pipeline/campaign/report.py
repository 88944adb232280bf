"""The campaign's conformance report: ``report.json``, ``report.md`` and ``report.html``.

:func:`write_report` takes a run folder (its ``raw/`` data, :mod:`pipeline.campaign.raw`), the
checker's judgement (``pipeline.campaign.verdicts.judge``'s dict) and the provenance
(:mod:`pipeline.campaign.provenance`), and writes the three files. ``report.json`` is the
contract (``docs/campaigns.md``): ``invariants`` keyed ``I1``..``I5`` each with a ``verdict``,
``slos`` each with ``name`` and ``verdict``, ``incidents`` each with ``kind`` and ``ran``,
``provenance``. It is a pure function of its inputs: sorted keys, a stable order, and
``generated_at`` taken from the run's end, so re-rendering the same data gives the same bytes
(and the same digest). An invariant the judgement leaves out is ``unknown``, never ``pass``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pipeline.campaign._plots import make_plots
from pipeline.campaign._report_data import (
    ReportError,
    RunData,
    bands,
    incidents,
    jsonable,
    load_run,
    phases,
)
from pipeline.campaign._report_format import INVARIANT_NAMES, fmt_utc
from pipeline.campaign._report_html import render_html
from pipeline.campaign._report_md import render_markdown

__all__ = [
    "FORMAT_VERSION",
    "ReportError",
    "ReportFiles",
    "build_document",
    "render_from_dir",
    "write_report",
]

FORMAT_VERSION: Final = 1
VERDICTS: Final = frozenset({"pass", "fail", "unknown"})
INVARIANT_TITLES: Final = {
    "I1": "Completeness",
    "I2": "Correlation",
    "I3": "Bounded resources",
    "I4": "No critical event lost",
    "I5": "Non-interference",
}


@dataclass(frozen=True)
class ReportFiles:
    json: Path
    markdown: Path
    html: Path


def write_report(
    run_dir: Path, judgement: Mapping[str, Any], provenance: Mapping[str, Any]
) -> ReportFiles:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``run_dir``."""
    run = load_run(run_dir)
    doc = build_document(run, judgement, provenance)
    marks = [
        (str(p["name"]), float(p["start_s"]))
        for p in doc["phases"]
        if p["name"] != "warmup" and isinstance(p.get("start_s"), int | float)
    ]
    ws_bound = run.plan.judge.ws_delay_p99_max_s if run.plan is not None else None
    plots = make_plots(run, bands(doc["incidents"]), marks, ws_bound)
    files = ReportFiles(run_dir / "report.json", run_dir / "report.md", run_dir / "report.html")
    _write(files.json, json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n")
    _write(files.markdown, render_markdown(doc))
    _write(files.html, render_html(doc, plots))
    return files


def render_from_dir(
    run_dir: Path,
    judgement: Mapping[str, Any],
    provenance: Mapping[str, Any] | None = None,
) -> ReportFiles:
    """Re-render a run folder's report from its raw data (``egresswatch campaign report``).

    Without ``provenance``, the one recorded in ``raw/meta.json`` at the end of the run.
    """
    if provenance is None:
        provenance = load_run(run_dir).meta.provenance
    return write_report(run_dir, judgement, provenance)


def build_document(
    run: RunData, judgement: Mapping[str, Any], provenance: Mapping[str, Any]
) -> dict[str, Any]:
    """The content of ``report.json`` (and of the Markdown and HTML made from it)."""
    if not isinstance(judgement, Mapping):
        raise ReportError(f"the judgement must be an object, got {type(judgement).__name__}")
    meta = run.meta
    overall = judgement.get("overall")
    if overall not in VERDICTS:
        raise ReportError(f"judgement overall must be one of pass/fail/unknown, got {overall!r}")
    incident_list = incidents(run, _list_of(judgement, "incidents"))
    doc: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "profile": meta.profile,
        "description": run.plan.description if run.plan is not None else "",
        "quick": meta.quick,
        # The checker may find a run incomplete that its runner thought complete (a load
        # generator that stopped early); either one says so, the report says so.
        "complete": meta.complete and judgement.get("complete") is not False,
        "stop_reason": meta.stop_reason or judgement.get("incomplete_reason"),
        "overall": overall,
        "invariants": _invariants(judgement.get("invariants", {})),
        "slos": _slos(_list_of(judgement, "slos")),
        "incidents": incident_list,
        "alerts": _mapping(judgement, "alerts"),
        "load": _load(run, _mapping(judgement, "load")),
        "phases": phases(run),
        "run": {
            "t0": run.t0,
            "started_at": meta.started_at,
            "started_at_utc": fmt_utc(meta.started_at),
            "ended_at": meta.ended_at,
            "ended_at_utc": fmt_utc(meta.ended_at),
            "duration_s": round(run.ended_at - meta.started_at, 3),
        },
        "provenance": _provenance(run, provenance),
        "generated_at": fmt_utc(run.ended_at),
    }
    doc["reproduce"] = _reproduce(doc)
    result: dict[str, Any] = jsonable(doc)
    return result


def _invariants(given: Any) -> dict[str, Any]:
    if not isinstance(given, Mapping):
        raise ReportError(f"judgement invariants must be an object, got {type(given).__name__}")
    result: dict[str, Any] = {}
    for name in sorted(set(given) | set(INVARIANT_NAMES)):
        entry = given.get(name)
        if entry is None:
            # No evidence is unknown, never pass.
            entry = {"verdict": "unknown", "evidence": f"the checker gave no verdict for {name}"}
        if not isinstance(entry, Mapping):
            raise ReportError(f"judgement invariants.{name} must be an object")
        if entry.get("verdict") not in VERDICTS:
            raise ReportError(
                f"judgement invariants.{name}.verdict must be pass/fail/unknown, "
                f"got {entry.get('verdict')!r}"
            )
        result[str(name)] = {"title": INVARIANT_TITLES.get(str(name), ""), **entry}
    return result


def _slos(given: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    for index, slo in enumerate(given):
        for field in ("name", "verdict"):
            if field not in slo:
                raise ReportError(f"judgement slos[{index}] has no {field!r}")
        if slo["verdict"] not in VERDICTS:
            raise ReportError(
                f"judgement slos[{index}] ({slo['name']}): verdict {slo['verdict']!r} "
                "is not pass/fail/unknown"
            )
    return [dict(slo) for slo in given]


def _load(run: RunData, judged: dict[str, Any]) -> dict[str, Any]:
    """The checker's load figures, completed by what the ticks and the summary say."""
    load = dict(judged)
    ticks = run.ticks
    if ticks:
        load.setdefault("ticks", len(ticks))
        load.setdefault("started", sum(t.started for t in ticks))
        load.setdefault("completed", sum(t.completed for t in ticks))
        load.setdefault("target_rate_max", max(t.target_rate for t in ticks))
    if run.load_summary is not None:
        dropped = sum(p.dropped_iterations for p in run.load_summary.phases.values())
        load.setdefault("dropped_iterations", dropped)
        load.setdefault("scheduled", sum(p.scheduled for p in run.load_summary.phases.values()))
    elif ticks:
        load.setdefault("dropped_iterations", sum(t.dropped for t in ticks))
    return load


def _provenance(run: RunData, given: Mapping[str, Any]) -> dict[str, Any]:
    meta = run.meta
    facts = dict(given)
    # The run's own record of what it ran wins over a later look at the file.
    file_sha = facts.get("profile_sha256")
    if file_sha not in (None, meta.profile_sha256):
        facts["profile_file_sha256_now"] = file_sha
    facts.update(
        profile=meta.profile,
        profile_path=meta.profile_path,
        profile_sha256=meta.profile_sha256,
        seed=meta.seed,
        quick=meta.quick,
        run_started_at_utc=fmt_utc(meta.started_at),
        run_ended_at_utc=fmt_utc(meta.ended_at),
    )
    facts.setdefault("commit", None)
    facts.setdefault("dirty", None)
    return facts


def _reproduce(doc: Mapping[str, Any]) -> dict[str, Any]:
    facts = doc["provenance"]
    quick = " --quick" if doc["quick"] else ""
    commands = []
    notes = [
        f"Profile {facts['profile_path']} (sha256 {facts['profile_sha256']}), seed "
        f"{facts['seed']}: the same profile and seed give the same schedule.",
        "Re-render this report from raw/ with `egresswatch campaign report DIR`; check its "
        "digest and signature with `egresswatch campaign verify DIR`.",
    ]
    if facts.get("commit"):
        commands.append(f"git checkout {facts['commit']}")
    else:
        notes.append("The git commit is unknown: the code that ran cannot be named.")
    if facts.get("dirty"):
        notes.append("The working tree had uncommitted changes: the commit alone is not the code.")
    commands.append(f"egresswatch campaign run {facts['profile_path']}{quick} --out DIR")
    commands += ["egresswatch campaign report DIR", "egresswatch campaign verify DIR"]
    return {"commands": commands, "notes": notes}


def _list_of(judgement: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = judgement.get(key, [])
    if not isinstance(value, list | tuple) or not all(isinstance(v, Mapping) for v in value):
        raise ReportError(f"judgement {key} must be a list of objects")
    return list(value)


def _mapping(judgement: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = judgement.get(key, {})
    if not isinstance(value, Mapping):
        raise ReportError(f"judgement {key} must be an object, got {type(value).__name__}")
    return dict(value)


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a reader never sees half a report."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
