"""``report.html``: the same report as ``report.md`` plus plots, in one self-contained page.

Self-contained means it opens from a file on a machine with no network: the CSS is inline, the
plots are inline SVG, there is no script, no font, no link and no ``url(...)``. All text from
the run or the judgement is escaped with :func:`html.escape`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any, Final

from pipeline.campaign._plots import Plot
from pipeline.campaign._report_format import (
    INCIDENT_HEADERS,
    INVARIANT_NAMES,
    Verdict,
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

__all__ = ["render_html"]

_CSS: Final = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1100px;
padding:1.5em;color:#1b1f24;background:#fff}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;
margin-top:1.8em}h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td{overflow-wrap:anywhere}
.v{font-weight:700;padding:1px 7px;border-radius:4px;white-space:nowrap}
.v-PASS{background:#dafbe1;color:#116329}.v-FAIL{background:#ffebe9;color:#a40e26}
.v-UNKNOWN{background:#fff8c5;color:#7d4e00}
.banner{background:#ffebe9;border:2px solid #a40e26;padding:.8em 1em;font-weight:700;
color:#a40e26;margin:1em 0}
.overall{font-size:1.3em;margin:.8em 0}
figure{margin:1em 0 1.5em}figcaption{color:#57606a;font-size:12px}
figure svg{width:100%;height:auto}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto}
.muted{color:#57606a}
"""
_SLO_SHOWN = ("name", "verdict", "source", "detail")
_PHASE_COLUMNS: Final = (
    ("Phase", "name"),
    ("From (s)", "start_s"),
    ("To (s)", "end_s"),
    ("Target/s", "target_rate_mean"),
    ("Achieved/s", "achieved_rate_mean"),
    ("Scheduled", "scheduled"),
    ("Started", "started"),
    ("Dropped", "dropped_iterations"),
)


def render_html(doc: Mapping[str, Any], plots: Sequence[Plot]) -> str:
    title = f"Conformance report: {doc['profile']}{' (quick)' if doc.get('quick') else ''}"
    body: list[str] = [f"<h1>{escape(title)}</h1>"]
    body += _header(doc)
    body += _invariants(doc["invariants"])
    body += _slos(doc["slos"])
    body += _incidents(doc["incidents"], doc.get("alerts", {}))
    body += _load(doc.get("load", {}), doc.get("phases", []))
    body += _plots(plots)
    body += _provenance(doc["provenance"])
    body += _reproduce(doc.get("reproduce", {}))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width,initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def badge(verdict: object) -> str:
    word = verdict_word(verdict)
    return f'<span class="v v-{word}">{word}</span>'


def _header(doc: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    if not doc.get("complete"):
        reason = escape(str(doc.get("stop_reason") or "unknown"))
        out.append(
            f'<div class="banner">INCOMPLETE RUN: stopped early ({reason}). Verdicts cover only '
            "what ran; this run cannot prove conformance.</div>"
        )
    if doc.get("description"):
        out.append(f"<p>{escape(str(doc['description']))}</p>")
    out.append(f'<p class="overall">Overall verdict: {badge(doc["overall"])}</p>')
    run = doc.get("run", {})
    out += _table(
        ("", ""),
        [
            ("Profile", doc["profile"]),
            ("Quick", bool(doc.get("quick"))),
            ("Complete", bool(doc.get("complete"))),
            ("Started (UTC)", run.get("started_at_utc")),
            ("Ended (UTC)", run.get("ended_at_utc")),
            ("Duration (s)", run.get("duration_s")),
            ("Commit", doc["provenance"].get("commit")),
        ],
    )
    out.append("<h2>Summary</h2>")
    rows: list[tuple[Any, ...]] = [
        (
            name,
            _Raw(badge(doc["invariants"][name].get("verdict"))),
            doc["invariants"][name].get("title"),
        )
        for name in INVARIANT_NAMES
    ]
    rows += [("SLO", _Raw(badge(s.get("verdict"))), s.get("name")) for s in doc["slos"]]
    rows += [(check, _Raw(badge(verdict)), what) for check, verdict, what in check_rows(doc)]
    return out + _table(("Check", "Verdict", "What"), rows)


def _invariants(invariants: Mapping[str, Any]) -> list[str]:
    out = ["<h2>Invariants</h2>"]
    for name in INVARIANT_NAMES:
        inv = invariants[name]
        out.append(f'<h3 id="{name}">{escape(heading(name, inv))} {badge(inv.get("verdict"))}</h3>')
        if inv.get("evidence"):
            out.append(f"<p>{escape(str(inv['evidence']))}</p>")
        rows = invariant_rows(inv)
        if rows:
            out += _table(("Measure", "Value"), rows)
    return out


def _slos(slos: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["<h2>SLOs</h2>"]
    if not slos:
        return [*out, "<p>No SLO was judged.</p>"]
    rows = [
        (
            s.get("name"),
            _Raw(badge(s.get("verdict"))),
            s.get("source"),
            s.get("detail"),
            fmt(dict(extra_items(s, _SLO_SHOWN))) if extra_items(s, _SLO_SHOWN) else "",
        )
        for s in slos
    ]
    return out + _table(("SLO", "Verdict", "Source", "Detail", "Figures"), rows)


def _incidents(incidents: Sequence[Mapping[str, Any]], alerts: Mapping[str, Any]) -> list[str]:
    out = ["<h2>Incidents</h2>"]
    if incidents:
        out += _table(INCIDENT_HEADERS, [incident_row(i) for i in incidents])
    else:
        out.append("<p>No incident was scheduled.</p>")
    sentence, unexplained, rest = alerts_summary(alerts)
    verdict = f" {badge(alerts['verdict'])}" if "verdict" in alerts else ""
    out += [f"<h3>Alerts{verdict}</h3>", f"<p>{escape(sentence)}</p>"]
    if unexplained:
        items = "".join(f"<li>{escape(fmt(a))}</li>" for a in unexplained[:20])
        more = len(unexplained) - 20
        tail = f"<li>... and {more} more (report.json has them all)</li>" if more > 0 else ""
        out.append(f"<ul>{items}{tail}</ul>")
    return out + (_table(("Alerts", "Value"), rest) if rest else [])


def _load(load: Mapping[str, Any], phases: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["<h2>Load</h2>"]
    if load:
        out += _table(("Measure", "Value"), load_rows(load))
    if phases:
        headers = [header for header, _ in _PHASE_COLUMNS]
        out += _table(headers, [[p.get(key) for _, key in _PHASE_COLUMNS] for p in phases])
    return out


def _plots(plots: Sequence[Plot]) -> list[str]:
    out = [
        "<h2>Plots</h2>",
        '<p class="muted">Shaded bands: incidents that ran (labelled with '
        "their ids); dotted lines: phase boundaries. Time in seconds from t0.</p>",
    ]
    for plot in plots:
        out.append(
            f'<figure id="plot-{escape(plot.key)}">{plot.svg}'
            f"<figcaption>{escape(plot.title)}. {escape(plot.caption)}</figcaption></figure>"
        )
    return out


def _provenance(provenance: Mapping[str, Any]) -> list[str]:
    return ["<h2>Provenance</h2>", *_table(("Fact", "Value"), flatten(provenance))]


def _reproduce(reproduce: Mapping[str, Any]) -> list[str]:
    out = ["<h2>How to reproduce</h2>"]
    notes = reproduce.get("notes", [])
    if notes:
        out.append("<ul>" + "".join(f"<li>{escape(str(n))}</li>" for n in notes) + "</ul>")
    commands = "\n".join(str(c) for c in reproduce.get("commands", []))
    return [*out, f"<pre>{escape(commands)}</pre>"]


class _Raw(str):
    """Markup made here (a badge), put in a cell as is; everything else is escaped."""


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(value)}</td>" for value in row) + "</tr>" for row in rows
    )
    return [f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"]


def _cell(value: object) -> str:
    if isinstance(value, _Raw):
        return str(value)
    if isinstance(value, Verdict):
        return badge(value) if value != "NOT RUN" else "<strong>NOT RUN</strong>"
    return escape(fmt(value))
