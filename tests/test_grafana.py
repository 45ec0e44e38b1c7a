"""grafana/actord.json: its structure, and every panel's expression evaluated against the real
Prometheus that scraped a real daemon (each must return data)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from ._daemon import ROOT
from ._prometheus import Observed

DASHBOARD = ROOT / "grafana" / "actord.json"


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _targets() -> list[tuple[str, str]]:
    return [
        (f"{panel['title']} [{target['refId']}]", target["expr"])
        for panel in _dashboard()["panels"]
        for target in panel["targets"]
    ]


def test_the_dashboard_is_well_formed() -> None:
    board = _dashboard()
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["actor"]["type"] == "query" and variables["actor"]["includeAll"]
    for panel in panels:
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for holder in (panel, variables["actor"], *panel["targets"]):
            # Never a hard-coded datasource: always the variable.
            assert holder["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
    text = DASHBOARD.read_text()
    uids = set(re.findall(r'"uid": "([^"]+)"', text)) - {"${datasource}", board["uid"]}
    assert uids == set()
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("messages", "mailbox", "latency", "cpu", "restarts", "dead letters", "jobs"):
        assert topic in titles, topic


def test_provisioning_examples_point_at_the_dashboard() -> None:
    provisioning = ROOT / "grafana" / "provisioning"
    datasource = (provisioning / "datasources" / "prometheus.yml").read_text()
    dashboards = (provisioning / "dashboards" / "actord.yml").read_text()
    assert "type: prometheus" in datasource and "apiVersion: 1" in datasource
    assert "type: file" in dashboards and "path:" in dashboards


def _substitute(expr: str) -> str:
    return expr.replace("$__rate_interval", "5m").replace("$actor", ".*")


@pytest.mark.parametrize(("panel", "expr"), _targets(), ids=[t[0] for t in _targets()])
def test_every_panel_returns_data(observed: Observed, panel: str, expr: str) -> None:
    result = observed.prometheus.query(_substitute(expr))
    assert result, f"{panel}: no data for {expr}"
    values = [float(r["value"][1]) for r in result]
    assert any(v == v for v in values), f"{panel}: only NaN"  # some real number
