"""``report.md``: the conformance report as a lead SRE reads it, from the report document.

Sections: verdict and completeness, one table per invariant (counts and the first lost,
unexpected or duplicated ids), SLOs, incidents (ran or not, why, the alerts they raised),
alerts with no incident, load (target vs achieved, dropped arrivals), provenance and how to
reproduce. Every cell is escaped so a ``|`` or a newline in the data cannot break a table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipeline.campaign._report_format import (
    INCIDENT_HEADERS,
    INVARIANT_NAMES,
    alerts_summary,
    check_rows,
    extra_items,
    flatten,
    fmt,
    heading,
    incident_row,
    invariant_rows,
    load_rows,
    verdict_word,
)

__all__ = ["render_markdown"]

_SLO_SHOWN = ("name", "verdict", "source", "detail")


def render_markdown(doc: Mapping[str, Any]) -> str:
    out: list[str] = []
    out += _header(doc)
    out += _invariants(doc["invariants"])
    out += _slos(doc["slos"])
    out += _incidents(doc["incidents"], doc.get("alerts", {}))
    out += _load(doc.get("load", {}), doc.get("phases", []))
    out += _provenance(doc["provenance"])
    out += _reproduce(doc.get("reproduce", {}))
    return "\n".join(out).rstrip() + "\n"


def _header(doc: Mapping[str, Any]) -> list[str]:
    quick = " (quick)" if doc.get("quick") else ""
    lines = [f"# Conformance report: {cell(doc['profile'])}{quick}", ""]
    if not doc.get("complete"):
        lines += [
            f"> **INCOMPLETE RUN**: stopped early ({cell(doc.get('stop_reason') or 'unknown')}). "
            "Verdicts cover only what ran; this run cannot prove conformance.",
            "",
        ]
    if doc.get("description"):
        lines += [cell(doc["description"]), ""]
    run = doc.get("run", {})
    lines += [
        f"**Overall verdict: {verdict_word(doc['overall'])}**",
        "",
        "The same report with its plots: `report.html`; machine-readable: `report.json`.",
        "",
        "| | |",
        "|---|---|",
        f"| Profile | {cell(doc['profile'])}{quick} |",
        f"| Complete | {'yes' if doc.get('complete') else 'NO'} |",
        f"| Started (UTC) | {cell(run.get('started_at_utc'))} |",
        f"| Ended (UTC) | {cell(run.get('ended_at_utc'))} |",
        f"| Duration | {cell(run.get('duration_s'))} s |",
        f"| Commit | {cell(doc['provenance'].get('commit'))} |",
        "",
        "## Summary",
        "",
        "| Check | Verdict | What |",
        "|---|---|---|",
    ]
    for name in INVARIANT_NAMES:
        inv = doc["invariants"][name]
        lines.append(f"| {name} | {verdict_word(inv.get('verdict'))} | {cell(inv.get('title'))} |")
    for slo in doc["slos"]:
        lines.append(f"| SLO | {verdict_word(slo.get('verdict'))} | {cell(slo.get('name'))} |")
    for check, verdict, what in check_rows(doc):
        lines.append(f"| {check} | {verdict_word(verdict)} | {cell(what)} |")
    return [*lines, ""]


def _invariants(invariants: Mapping[str, Any]) -> list[str]:
    lines = ["## Invariants", ""]
    for name in INVARIANT_NAMES:
        inv = invariants[name]
        lines += [
            f"### {cell(heading(name, inv))}: {verdict_word(inv.get('verdict'))}",
            "",
        ]
        if inv.get("evidence"):
            lines += [cell(inv["evidence"]), ""]
        rows = invariant_rows(inv)
        if rows:
            lines += table(("Measure", "Value"), rows)
    return lines


def _slos(slos: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["## SLOs", ""]
    if not slos:
        return [*lines, "No SLO was judged.", ""]
    rows = [
        (
            slo.get("name"),
            verdict_word(slo.get("verdict")),
            slo.get("source"),
            slo.get("detail"),
            fmt(dict(extra_items(slo, _SLO_SHOWN))) if extra_items(slo, _SLO_SHOWN) else "",
        )
        for slo in slos
    ]
    return lines + table(("SLO", "Verdict", "Source", "Detail", "Figures"), rows)


def _incidents(incidents: Sequence[Mapping[str, Any]], alerts: Mapping[str, Any]) -> list[str]:
    lines = ["## Incidents", ""]
    if incidents:
        lines += table(INCIDENT_HEADERS, [incident_row(i) for i in incidents])
    else:
        lines += ["No incident was scheduled.", ""]
    sentence, unexplained, rest = alerts_summary(alerts)
    verdict = f" {verdict_word(alerts['verdict'])}" if "verdict" in alerts else ""
    lines += [f"### Alerts{verdict}", "", cell(sentence), ""]
    lines += [f"- {cell(fmt(a))}" for a in unexplained[:20]]
    if len(unexplained) > 20:
        lines.append(f"- ... and {len(unexplained) - 20} more (report.json has them all)")
    return lines + ([""] + table(("Alerts", "Value"), rest) if rest else [""])


def _load(load: Mapping[str, Any], phases: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["## Load", ""]
    if load:
        lines += table(("Measure", "Value"), load_rows(load))
    if phases:
        rows = [
            (
                p.get("name"),
                p.get("start_s"),
                p.get("end_s"),
                p.get("target_rate_mean"),
                p.get("achieved_rate_mean"),
                p.get("scheduled"),
                p.get("started"),
                p.get("dropped_iterations"),
            )
            for p in phases
        ]
        headers = (
            "Phase",
            "From (s)",
            "To (s)",
            "Target/s",
            "Achieved/s",
            "Scheduled",
            "Started",
            "Dropped",
        )
        lines += table(headers, rows)
    return lines


def _provenance(provenance: Mapping[str, Any]) -> list[str]:
    return ["## Provenance", "", *table(("Fact", "Value"), flatten(provenance))]


def _reproduce(reproduce: Mapping[str, Any]) -> list[str]:
    lines = ["## How to reproduce", ""]
    lines += [f"- {cell(note)}" for note in reproduce.get("notes", [])]
    commands = reproduce.get("commands", [])
    return [*lines, "", "```sh", *(str(c) for c in commands), "```", ""]


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
    ]
    lines += ["| " + " | ".join(cell(fmt(v)) for v in row) + " |" for row in rows]
    return [*lines, ""]


def cell(value: object) -> str:
    """One table cell or line of text: no newline, no bare ``|``, no HTML."""
    text = fmt(value) if not isinstance(value, str) else value
    text = " ".join(text.split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
