"""deploy/monitoring: the alert rules, their unit tests, the scrape configuration and the
Grafana dashboard are valid for Prometheus (checked by Debian's `promtool` where it is
installed, which .ci/run does; else by a structural parse) and name only metrics the code
declares."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
PROMTOOL = shutil.which("promtool")
METRIC = re.compile(r"\b(careplan_[a-z0-9_]+)")
SEVERITIES = {"page", "ticket"}


def declared_metrics() -> set[str]:
    """Every ``careplan_`` metric name written in the services' code."""
    names: set[str] = set()
    for path in (ROOT / "services").rglob("*.py"):
        names |= set(re.findall(r"[\"'](careplan_[a-z0-9_]+)[\"']", path.read_text()))
    return names


def base_name(series: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix):
            return series.removesuffix(suffix)
    return series


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def promtool(*args: str, cwd: Path = MONITORING) -> None:
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_severity_a_summary_and_names_only_declared_metrics() -> None:
    declared = declared_metrics()
    assert rules(), "no alerting rules"
    for rule in rules():
        assert rule["alert"].startswith("Careplan"), rule
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        for name in METRIC.findall(rule["expr"]):
            assert base_name(name) in declared, f"{rule['alert']} names {name}, which no code declares"


def test_the_dashboard_names_only_declared_metrics_and_every_panel_has_a_query() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    declared = declared_metrics()
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        for target in panel["targets"]:
            for name in METRIC.findall(target["expr"]):
                assert base_name(name) in declared, f"panel {panel['title']!r} names {name}, which no code declares"


def test_the_alarms_the_rules_watch_are_the_ones_the_code_raises() -> None:
    watched = {m for rule in rules() for m in re.findall(r'alarm="([a-z_]+)"', rule["expr"])}
    code = "\n".join(p.read_text() for p in (ROOT / "services").rglob("*.py"))
    for alarm in watched:
        assert f'"{alarm}"' in code, f"alerts.yml watches alarm {alarm}, which the code never raises"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus package) is not installed")
def test_promtool_accepts_the_rules_and_they_pass_their_unit_tests() -> None:
    promtool("check", "rules", "alerts.yml")
    promtool("test", "rules", "alerts.test.yml")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus package) is not installed")
def test_promtool_accepts_the_scrape_configuration() -> None:
    promtool("check", "config", "prometheus.yml")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus package) is not installed")
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses PromQL only in rule files: each query becomes a recording rule.
    records = [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(dashboard_exprs())]
    (tmp_path / "dashboard-rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    promtool("check", "rules", "dashboard-rules.yml", cwd=tmp_path)
