"""deploy/prometheus/rules.yml: promtool accepts it, its unit tests pass, and its SLO alerts
carry the numbers of the worker's shipped rules (tables/defaults/slo-rules.toml)."""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tables.slo_rules import SloRule, budget, load_rules
from tests.prom import PROMTOOL, ensure_prometheus

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = RULES_DIR / "rules.yml"
RULES_TEST = RULES_DIR / "rules_test.yml"
# PyYAML comes with the dev extras (through schemathesis) but ships no type stubs.
yaml: Any = importlib.import_module("yaml")
SEVERITIES = {"page", "ticket"}
_DURATION = re.compile(r"^(\d+)([smh])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    ensure_prometheus()
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, cwd=RULES_DIR
    )


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _seconds(duration: str) -> int:
    match = _DURATION.match(duration)
    assert match, f"unexpected duration {duration!r}"
    return int(match[1]) * _SECONDS[match[2]]


def test_promtool_check_rules_passes() -> None:
    check = _promtool("check", "rules", str(RULES))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout


def test_promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_severity_and_a_summary() -> None:
    alerts = _alerts()
    assert len(alerts) >= 10
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names)), names
    for alert in alerts:
        assert alert["labels"]["severity"] in SEVERITIES, alert["alert"]
        assert alert["annotations"]["summary"].strip(), alert["alert"]


def test_every_alert_is_unit_tested() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    tested = {case["alertname"] for group in tests for case in group.get("alert_rule_test", [])}
    untested = {a["alert"] for a in _alerts()} - tested
    assert not untested, f"alerts without a promtool test: {sorted(untested)}"


@pytest.mark.parametrize("rule", load_rules(), ids=lambda rule: rule.name)
def test_slo_alert_mirrors_the_shipped_rule(rule: SloRule) -> None:
    matching = [a for a in _alerts() if a["labels"].get("slo_rule") == rule.name]
    assert len(matching) == 1, f"no Prometheus alert mirrors SLO rule {rule.name!r}"
    alert = matching[0]
    expr = " ".join(alert["expr"].split())
    assert alert["labels"]["severity"] == rule.severity
    assert _seconds(alert.get("for", "0s")) == rule.for_s
    assert f"* 300 >= {rule.min_requests}" in expr, expr
    assert rule.service == "*" and rule.route == "*", "the mirror is per (service, route)"
    (window,) = rule.windows
    assert (window.long, window.short) == ("5m", "1m")
    if rule.kind == "latency_p99":
        assert rule.threshold_ms is not None
        threshold = f"{rule.threshold_ms / 1000:g}"
        assert f"p99_5m > {threshold} " in expr and f"p99_1m > {threshold} " in expr, expr
    else:
        assert rule.objective is not None and window.burn_rate is not None
        ratio = "error_ratio" if rule.kind == "error_rate" else "timeout_ratio"
        limit = f"> {window.burn_rate:g} * {budget(rule.objective):g}"
        assert f"{ratio}:rate5m {limit}" in expr and f"{ratio}:rate1m {limit}" in expr, expr
