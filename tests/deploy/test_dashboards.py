"""The Grafana dashboards and Prometheus rules in deploy/ (pure: no server). That their queries answer with
data from a running stack is tests/e2e/test_observability.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support import DASHBOARDS, ROOT, RULE_FILES, alert_rules, dashboard_queries

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
METRIC = re.compile(r"\btriggers_[a-z0-9_]+")


def defined_metrics() -> set[str]:
    """Every name the code gives a metric (``Histogram("triggers_...")``, ``GaugeMetricFamily("triggers_...")``)."""
    sources = [*ROOT.glob("libs/*/src/**/*.py"), *ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("src/**/*.py")]
    return {name for path in sources for name in re.findall(r'"(triggers_[a-z0-9_]+)"', path.read_text())}


def undefined(exprs: list[str]) -> set[str]:
    defined = defined_metrics()
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    return {name for name in used if re.sub(r"_(bucket|count|sum)$", "", name) not in defined and name not in defined}


def test_the_four_dashboards_and_the_rules_exist() -> None:
    assert {path.stem for path in DASHBOARDS} == {"overview", "ingest", "inbox", "webhooks"}
    assert RULE_FILES


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_structure(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"

    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        cover = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & cover, f"{panel['title']} overlaps another panel"
        cells |= cover
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == DATASOURCE, panel["title"]


def test_dashboards_use_only_metrics_the_code_defines() -> None:
    exprs = [expr for path in DASHBOARDS for _, expr in dashboard_queries(path)]
    assert exprs and not undefined(exprs)
    assert not any("$" in expr for expr in exprs), "every Grafana variable has a substitute in the tests"


def test_rules_use_only_metrics_the_code_defines() -> None:
    exprs = [expr for _, _, expr in alert_rules()]
    assert exprs and not undefined(exprs)


def test_a_misspelt_metric_is_caught() -> None:
    assert undefined(["sum(rate(triggers_http_request_second_count[5m]))"]) == {"triggers_http_request_second_count"}
