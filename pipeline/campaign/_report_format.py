"""How the report's Markdown and HTML say things: values, times, verdicts, tables of details.

Both renderers take the same report document (``report.json``'s content) and use these
helpers, so the two say the same thing in the same words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

__all__ = [
    "INCIDENT_HEADERS",
    "FIRST_ID_LISTS",
    "INVARIANT_NAMES",
    "MAX_LISTED",
    "extra_items",
    "flatten",
    "heading",
    "invariant_rows",
    "fmt",
    "fmt_ids",
    "fmt_utc",
    "Verdict",
    "alerts_summary",
    "check_rows",
    "incident_row",
    "incident_window",
    "load_rows",
    "verdict_word",
]

INVARIANT_NAMES: Final = ("I1", "I2", "I3", "I4", "I5")
FIRST_ID_LISTS: Final = ("first_lost", "first_unexpected", "first_duplicated")
MAX_LISTED: Final = 10
"""Ids, alerts and list items shown in a table cell; the rest are counted, not listed."""
INCIDENT_HEADERS: Final = (
    "Id",
    "Kind",
    "Window (s)",
    "Ran",
    "Expected alerts",
    "Raised",
    "Fired",
    "Resolved",
    "Notes",
)


class Verdict(str):
    """A verdict in a table row: Markdown writes the word, HTML a coloured badge.

    An empty verdict means the check does not apply (an incident that expects no alert).
    """


def verdict_word(verdict: object) -> str:
    """``PASS``, ``FAIL`` or ``UNKNOWN`` (anything else is shown as unknown, never as pass)."""
    word = str(verdict).lower()
    return word.upper() if word in ("pass", "fail") else "UNKNOWN"


def fmt(value: object) -> str:
    """A value as a reader wants it in a table cell: short, exact for integers."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # Epoch seconds and big counters keep their digits; small measures 6 significant.
        return f"{value:.3f}" if abs(value) >= 1e6 else f"{value:.6g}"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}={fmt(v)}" for k, v in sorted(value.items(), key=_key))
    if isinstance(value, Sequence) and not isinstance(value, str):
        return fmt_ids(value)
    return str(value)


def fmt_ids(values: Sequence[Any]) -> str:
    """The first :data:`MAX_LISTED` items, then how many more."""
    shown = ", ".join(fmt(v) for v in values[:MAX_LISTED])
    more = len(values) - MAX_LISTED
    if not values:
        return "none"
    return f"{shown} (+{more} more)" if more > 0 else shown


def fmt_utc(epoch: object) -> str:
    if isinstance(epoch, int | float) and not isinstance(epoch, bool) and epoch > 0:
        return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds")
    return "-"


def incident_window(incident: Mapping[str, Any]) -> str:
    """``start-end s`` from t0: as it ran when it ran, as planned otherwise."""
    start, end = incident.get("start_s"), incident.get("end_s")
    if isinstance(start, int | float) and isinstance(end, int | float):
        return f"{start:.1f}-{end:.1f}"
    return "-"


def heading(name: str, invariant: Mapping[str, Any]) -> str:
    """``I1 Completeness``: the name once, whether or not the title starts with it."""
    title = str(invariant.get("title") or "")
    return title if title.startswith(name) else f"{name} {title}".strip()


def invariant_rows(invariant: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Counts, then the first ids of each set, then any other figure, nested ones dotted."""
    rows = flatten(invariant.get("counts") or {})
    rows += [(key, fmt_ids(invariant.get(key) or [])) for key in FIRST_ID_LISTS if key in invariant]
    shown = ("verdict", "title", "evidence", "counts", *FIRST_ID_LISTS)
    others = [(k, v) for k, v in extra_items(invariant, shown) if not k.startswith("first_")]
    rows += flatten(dict(others))
    # Other first_* lists (first_invalid, first_extra...) are ids too: listed, then counted.
    rows += [(k, fmt_ids(v)) for k, v in extra_items(invariant, shown) if k.startswith("first_")]
    return rows


def incident_row(incident: Mapping[str, Any]) -> tuple[Any, ...]:
    """One incident as a row under :data:`INCIDENT_HEADERS`."""
    raised = [
        a.get("rule", fmt(a)) if isinstance(a, Mapping) else a
        for a in incident.get("alerts_raised") or []
    ]
    notes = [incident.get("reason"), incident.get("alert_detail"), incident.get("effect_detail")]
    return (
        incident.get("id"),
        incident.get("kind"),
        incident_window(incident),
        "ran" if incident.get("ran") else Verdict("NOT RUN"),
        incident.get("expect_alerts") or [],
        raised,
        _optional_verdict(incident.get("alert_verdict")),
        _optional_verdict(incident.get("resolve_verdict")),
        "; ".join(str(n) for n in notes if n),
    )


def check_rows(doc: Mapping[str, Any]) -> list[tuple[str, object, str]]:
    """The summary's rows beyond invariants and SLOs: every check ``overall`` folds in."""
    rows: list[tuple[str, object, str]] = []
    for incident in doc.get("incidents") or []:
        name = f"{incident.get('id')}"
        expected = ", ".join(str(a) for a in incident.get("expect_alerts") or [])
        if incident.get("alert_verdict"):
            rows.append(("alert", incident["alert_verdict"], f"{name} raised {expected}"))
        if incident.get("resolve_verdict"):
            rows.append(("alert", incident["resolve_verdict"], f"{name}: {expected} resolved"))
        if incident.get("effect_verdict"):
            rows.append(("incident", incident["effect_verdict"], f"{name}: dead-lettered"))
    alerts = doc.get("alerts") or {}
    if alerts.get("verdict"):
        rows.append(("alerts", alerts["verdict"], "no alert without an incident"))
    return rows


def alerts_summary(alerts: Mapping[str, Any]) -> tuple[str, list[Any], list[tuple[str, Any]]]:
    """(sentence, the unexplained alerts listed, the other figures) of the alerts check."""
    unexplained = list(alerts.get("unexplained") or [])
    count = alerts.get("unexplained_count", len(unexplained))
    sentence = (
        f"Alerts seen: {fmt(alerts.get('total'))}; fired with no incident to explain them: "
        f"{fmt(count)}."
    )
    if alerts.get("detail"):
        sentence += f" {alerts['detail']}."
    shown = ("total", "unexplained", "unexplained_count", "verdict", "detail")
    return sentence, unexplained, extra_items(alerts, shown)


def load_rows(load: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The load figures; per-phase figures have their own table."""
    return [(k, v) for k, v in sorted(load.items()) if k != "phases"]


def _optional_verdict(verdict: object) -> str:
    return "" if verdict is None else Verdict(verdict_word(verdict))


def extra_items(record: Mapping[str, Any], shown: Sequence[str]) -> list[tuple[str, Any]]:
    """The record's keys not in ``shown``, sorted: details no column was made for."""
    return sorted(((k, v) for k, v in record.items() if k not in shown), key=_key)


def flatten(value: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings as ``a.b.c`` rows, sorted (the provenance table)."""
    rows: list[tuple[str, Any]] = []
    for key, item in sorted(value.items(), key=_key):
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            rows.extend(flatten(item, f"{name}."))
        else:
            rows.append((name, item))
    return rows


def _key(item: tuple[Any, Any]) -> str:
    return str(item[0])
