"""Read the provisioned Grafana dashboard the way Grafana would run it, for tests.

- :data:`DASHBOARD` and :data:`DATASOURCES` are the repository's files under deploy/grafana/;
  :func:`load_dashboard` and :func:`provisioned_datasource_uid` read them.
- :func:`dashboard_queries` lists every PromQL expression the dashboard runs: each panel
  target, each annotation, each template variable's ``label_values`` query.
- :func:`fill` substitutes template variables as Grafana 11 does for a multi-value variable
  (each value regex-escaped, several joined with ``|``; "All" is the variable's ``allValue``)
  and Grafana's interval macros by a fixed duration, so a real Prometheus can answer.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "egresswatch.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "egresswatch.yml"
ALL = "$__all"
INTERVAL_MACROS = ("$__rate_interval", "$__interval", "$__range")
# PyYAML comes with the dev extras (through schemathesis) but ships no type stubs.
yaml: Any = importlib.import_module("yaml")
_REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|]")
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass(frozen=True)
class Query:
    """One expression of the dashboard and where it comes from."""

    where: str  # "panel 3 'Latency p99 per route' A", "annotation ...", "variable route"
    expr: str
    panel_id: int | None = None


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def load_yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def provisioned_datasource_uid() -> str:
    (source,) = load_yaml(DATASOURCES)["datasources"]
    uid: str = source["uid"]
    return uid


def dashboard_queries(dashboard: Mapping[str, Any]) -> Iterator[Query]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            where = f"panel {panel['id']} {panel['title']!r} {target['refId']}"
            yield Query(where, target["expr"], panel["id"])
    for annotation in dashboard["annotations"]["list"]:
        yield Query(f"annotation {annotation['name']!r}", annotation["expr"])
    for variable in dashboard["templating"]["list"]:
        yield Query(f"variable {variable['name']}", variable["query"]["query"])


def variables_of(dashboard: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def regex_escape(value: str) -> str:
    """Grafana's ``prometheusSpecialRegexEscape``: backslashes doubled for a PromQL string."""
    return _REGEX_SPECIAL.sub(lambda m: "\\\\" + m[0], value.replace("\\", "\\\\\\\\"))


def fill(
    expr: str,
    dashboard: Mapping[str, Any],
    values: Mapping[str, Sequence[str] | str],
    *,
    interval: str = "1m",
) -> str:
    """``expr`` with every ``$var``/``${var}`` replaced (``ALL`` = the variable's allValue)
    and every interval macro replaced by ``interval``. Unknown variables raise KeyError."""
    for macro in INTERVAL_MACROS:
        expr = expr.replace(macro, interval)
    variables = variables_of(dashboard)

    def substitute(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        variable = variables[name]
        chosen = values[name]
        chosen = [chosen] if isinstance(chosen, str) else list(chosen)
        if chosen == [ALL]:
            return str(variable["allValue"])
        escaped = [regex_escape(v) for v in chosen]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    return _VARIABLE.sub(substitute, expr)


def variables_used(expr: str) -> set[str]:
    """Names of the ``$var``/``${var}`` an expression uses, interval macros left out."""
    for macro in INTERVAL_MACROS:
        expr = expr.replace(macro, "")
    return {m[1] or m[2] for m in _VARIABLE.finditer(expr)}
