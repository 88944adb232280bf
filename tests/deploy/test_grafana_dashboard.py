"""deploy/grafana/: the provisioning files and the dashboard JSON hold together for the
Grafana version they name (11.x, schemaVersion 39), as far as a file can be checked without
a Grafana: datasource by the provisioned uid everywhere, no panel without a query, unique
ids, a grid that fits, defined template variables, and a panel for each figure of issue 15.
tests/integration/test_grafana_dashboard.py runs every query against a real Prometheus."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest

from tests.deploy.dashboard import (
    ALL,
    DASHBOARD,
    PROVIDERS,
    REPO,
    dashboard_queries,
    fill,
    load_dashboard,
    load_yaml,
    provisioned_datasource_uid,
    regex_escape,
    variables_of,
    variables_used,
)

SCHEMA_VERSION = 39  # Grafana 11.0 to 11.3 write 39
PANEL_TYPES = {"timeseries", "stat", "table", "state-timeline"}
GRID_WIDTH = 24


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


@pytest.fixture(scope="module")
def datasource() -> dict[str, str]:
    return {"type": "prometheus", "uid": provisioned_datasource_uid()}


def test_datasource_provisioning_has_a_fixed_uid() -> None:
    config = load_yaml(REPO / "deploy/grafana/provisioning/datasources/prometheus.yml")
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy"
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", source["uid"]), source["uid"]
    assert source["url"] == "http://prometheus:9090"  # compose's service name and port
    assert source["isDefault"] is True


def test_dashboard_provider_reads_the_folder_compose_mounts() -> None:
    config = load_yaml(PROVIDERS)
    (provider,) = config["providers"]
    assert provider["type"] == "file" and provider["disableDeletion"] is True
    grafana = load_yaml(REPO / "compose.yml")["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"])
    assert provider["options"]["path"] == mounts["./deploy/grafana/dashboards"]
    provisioning = grafana.get("environment", {}).get("GF_PATHS_PROVISIONING")
    assert mounts["./deploy/grafana/provisioning"] == (provisioning or "/etc/grafana/provisioning")
    version = re.search(r"\b(\d+)\.\d+\.\d+\b", grafana["image"])  # the default tag
    assert version and version[1] == "11", grafana["image"]


def test_dashboard_names_its_grafana_version_and_schema(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] == SCHEMA_VERSION
    assert "Grafana 11" in dashboard["description"]
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["title"] and dashboard["time"]["from"].startswith("now-")
    assert "__inputs" not in dashboard, "provisioned dashboards take no import inputs"
    assert "${DS_" not in DASHBOARD.read_text(), "datasource by uid, never an import variable"
    assert isinstance(dashboard.get("version"), int)


def test_every_panel_has_a_query_on_the_provisioned_datasource(
    dashboard: dict[str, Any], datasource: dict[str, str]
) -> None:
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids), ids
    for panel in panels:
        name = f"panel {panel['id']} {panel['title']!r}"
        assert panel["type"] in PANEL_TYPES, name
        assert panel["title"].strip() and panel["description"].strip(), name
        assert panel["datasource"] == datasource, name
        assert {"defaults", "overrides"} <= panel["fieldConfig"].keys(), name
        assert isinstance(panel["options"], dict), name
        targets = panel["targets"]
        assert targets, f"{name} has no query"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), name
        for target in targets:
            assert target["datasource"] == datasource, name
            assert target["expr"].strip(), name
            assert target["expr"] == target["expr"].strip()


def test_panels_sit_on_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    boxes = []
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        x, y, w, h = (grid[k] for k in ("x", "y", "w", "h"))
        assert all(isinstance(v, int) for v in (x, y, w, h)), panel["title"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= GRID_WIDTH, panel["title"]
        boxes.append((panel["title"], x, y, w, h))
    for a, b in itertools.combinations(boxes, 2):
        overlap_x = a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
        overlap_y = a[2] < b[2] + b[4] and b[2] < a[2] + a[4]
        assert not (overlap_x and overlap_y), f"{a[0]!r} overlaps {b[0]!r}"


def test_template_variables_are_label_values_on_the_datasource(
    dashboard: dict[str, Any], datasource: dict[str, str]
) -> None:
    variables = variables_of(dashboard)
    assert set(variables) == {"service", "route"}
    for name, variable in variables.items():
        assert variable["type"] == "query" and variable["datasource"] == datasource
        query = variable["query"]["query"]
        assert query == variable["definition"]
        assert re.fullmatch(
            rf"label_values\(egresswatch_outbound_requests_total.*, {name}\)", query
        )
        assert variable["includeAll"] and variable["multi"] and variable["allValue"] == ".*"
        assert variable["current"]["value"] == [ALL]
    assert '{service=~"$service"}' in variables["route"]["query"]["query"]


def test_every_variable_a_query_uses_is_defined(dashboard: dict[str, Any]) -> None:
    defined = set(variables_of(dashboard))
    for query in dashboard_queries(dashboard):
        assert variables_used(query.expr) <= defined, query
        assert "$" not in fill(query.expr, dashboard, {"service": "a", "route": ALL}), query


def test_annotations_use_the_provisioned_datasource(
    dashboard: dict[str, Any], datasource: dict[str, str]
) -> None:
    annotations = dashboard["annotations"]["list"]
    assert annotations
    for annotation in annotations:
        assert annotation["datasource"] == datasource and annotation["expr"]


_BUCKETS_PER_ROUTE = (
    "sum by (service, route, le) (rate(egresswatch_outbound_request_duration_seconds_bucket"
)
# Each figure issue 15 asks for, and what its panel must query.
FIGURES = {
    "p50": f"histogram_quantile(0.50, {_BUCKETS_PER_ROUTE}",
    "p95": f"histogram_quantile(0.95, {_BUCKETS_PER_ROUTE}",
    "p99": f"histogram_quantile(0.99, {_BUCKETS_PER_ROUTE}",
    "request rate": "rate(egresswatch_outbound_requests_total",
    "error rate": "rate(egresswatch_outbound_errors_total",
    "retries": "rate(egresswatch_outbound_retries_total",
    "timeouts": "rate(egresswatch_outbound_timeouts_total",
    "breaker states": "egresswatch_breaker_state",
    "DLQ": "egresswatch_dead_letters_total",
    "spool fill": "egresswatch_sink_spool_fill_ratio",
    "upload lag": "egresswatch_sink_upload_lag_seconds",
    "late events": "egresswatch_late_events_total",
    "label overflow": "egresswatch_label_overflow_total",
    "alerts (rules)": "ALERTS{",
    "alerts (worker)": "egresswatch_alert_log_episodes",
}


@pytest.mark.parametrize("figure", FIGURES)
def test_the_dashboard_shows(figure: str, dashboard: dict[str, Any]) -> None:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert any(FIGURES[figure] in e for e in exprs), f"no panel shows {figure}"


def test_fill_escapes_values_like_grafana(dashboard: dict[str, Any]) -> None:
    expr = 'x{service=~"$service", route=~"${route}"}[$__rate_interval]'
    filled = fill(expr, dashboard, {"service": ["a", "b.c"], "route": "/o/{id}"}, interval="2m")
    assert filled == 'x{service=~"(a|b\\\\.c)", route=~"/o/\\\\{id\\\\}"}[2m]'
    assert fill(expr, dashboard, {"service": ALL, "route": ALL}) == (
        'x{service=~".*", route=~".*"}[1m]'
    )
    assert regex_escape("a\\b") == "a\\\\\\\\b"
    json.dumps(dashboard)  # plain JSON all the way down
