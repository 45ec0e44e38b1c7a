"""grafana/: the dashboard's structure (one daemon at a time, saturation as a ratio, thresholds),
the alerting rules run by promtool on made-up series, and every panel's expression evaluated
against the real Prometheus that scraped a real daemon (each must return that daemon's data)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from actord import DeadLetterReason

from ._daemon import ROOT
from ._prometheus import ALERTS, Observed, require

DASHBOARD = ROOT / "grafana" / "actord.json"
INSTANCE = 'instance=~"$instance"'
# The dead letters that are the expected record of actors stopped on purpose (a job that ended
# early, a shutdown): shown apart, and counted by no threshold and no alert.
EXPECTED = {DeadLetterReason.STOPPED.value}
# A PromQL aggregation, with its `by`/`without` clause if it has one.
_AGGREGATION = re.compile(
    r"\b(sum|min|max|avg|count|group|stddev|stdvar|topk|bottomk|quantile|count_values)\s*"
    r"(?:(by|without)\s*\(([^)]*)\))?\s*\("
)
_SELECTOR = re.compile(r"\b((?:actord|process)_[a-z_]+)(\{[^}]*\})?")


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _targets() -> list[tuple[str, str]]:
    return [
        (f"{panel['title']} [{target['refId']}]", target["expr"])
        for panel in _dashboard()["panels"]
        for target in panel["targets"]
    ]


def _panel(word: str) -> dict[str, Any]:
    """The one panel whose title has `word`."""
    (panel,) = [p for p in _dashboard()["panels"] if word in p["title"].lower()]
    return panel


def _exprs(panel: dict[str, Any]) -> list[str]:
    return [target["expr"] for target in panel["targets"]]


def _thresholds(panel: dict[str, Any]) -> list[float]:
    """The panel's threshold values (the base step has none), checked to be drawn."""
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["custom"]["thresholdsStyle"]["mode"] != "off", panel["title"]
    return [step["value"] for step in defaults["thresholds"]["steps"] if step["value"] is not None]


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
        for holder in (panel, variables["actor"], variables["instance"], *panel["targets"]):
            # Never a hard-coded datasource: always the variable.
            assert holder["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
    text = DASHBOARD.read_text()
    uids = set(re.findall(r'"uid": "([^"]+)"', text)) - {"${datasource}", board["uid"]}
    assert uids == set()
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("messages", "saturation", "latency", "cpu", "restarts", "dead letters", "jobs"):
        assert topic in titles, topic


def test_an_instance_variable_picks_one_daemon() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    instance = variables["instance"]
    assert instance["type"] == "query"
    assert instance["definition"] == "label_values(actord_build_info, instance)"
    assert instance["query"]["query"] == instance["definition"]
    assert not instance["multi"] and not instance["includeAll"]  # one daemon at a time
    assert INSTANCE in variables["actor"]["definition"]  # that daemon's actors only


@pytest.mark.parametrize(("panel", "expr"), _targets(), ids=[t[0] for t in _targets()])
def test_every_query_reads_one_daemon_and_never_sums_daemons(panel: str, expr: str) -> None:
    selectors = _SELECTOR.findall(expr)
    assert selectors, f"{panel}: no metric in {expr}"
    for metric, matchers in selectors:
        assert INSTANCE in matchers, f"{panel}: {metric} is not filtered by $instance"
    for name, clause, labels in _AGGREGATION.findall(expr):
        # Even a variable edited to match several daemons keeps them apart.
        kept = {label.strip() for label in labels.split(",")}
        assert clause == "by" and "instance" in kept, f"{panel}: {name} drops instance in {expr}"


def test_the_mailbox_panel_is_saturation_with_a_threshold() -> None:
    panel = _panel("saturation")
    (expr,) = _exprs(panel)
    depth, capacity = expr.split(" / ")
    # A ratio per pool (or actor), never a capacity on the same axis as the depths: the
    # store's 65,536 slots would flatten the 8-slot pools.
    assert depth.startswith("max by (instance, pool) (actord_actor_mailbox_depth{")
    assert capacity.startswith("max by (instance, pool) (actord_actor_mailbox_capacity{")
    assert capacity.endswith("} > 0)")  # a role with no live actor: no series, not 0 / 0
    defaults = panel["fieldConfig"]["defaults"]
    assert (defaults["unit"], defaults["min"], defaults["max"]) == ("percentunit", 0, 1)
    levels = _thresholds(panel)
    assert levels and all(0 < level < 1 for level in levels)


def test_restarts_and_dead_letters_have_thresholds() -> None:
    for word in ("restarts", "trouble"):
        panel = _panel(word)
        assert _thresholds(panel) == [1], panel["title"]  # a single one is worth a look
        assert all("increase(" in expr for expr in _exprs(panel))


def test_dead_letters_are_split_into_trouble_and_the_expected() -> None:
    trouble, expected = _panel("trouble"), _panel("stopped actors")
    (trouble_expr,) = _exprs(trouble)
    (expected_expr,) = _exprs(expected)
    reasons = {reason.value for reason in DeadLetterReason}
    assert reasons >= EXPECTED  # the excluded reasons exist, with these names
    (excluded,) = re.findall(r'reason!="([^"]+)"', trouble_expr)
    (shown,) = re.findall(r'reason="([^"]+)"', expected_expr)
    assert {excluded} == {shown} == EXPECTED  # together, every reason; none in both
    # The expected ones carry no threshold: they page nobody.
    assert "thresholds" not in expected["fieldConfig"]["defaults"]
    rules = ALERTS.read_text()
    assert 'actord_dead_letters_total{reason!="stopped"}' in rules


def _without_annotations(text: str) -> str:
    """The rules with their annotations (text for people) left out: `promtool test rules`
    would compare every rendered annotation; these tests are about what fires."""
    kept: list[str] = []
    skipping: int | None = None  # the indentation of the `annotations:` key being skipped
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if skipping is not None and (not line.strip() or indent > skipping):
            continue
        skipping = None
        if line.strip() == "annotations:":
            skipping = indent
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def _series(metric: str, instance: str, values: str, **labels: str) -> dict[str, str]:
    """An input series of `promtool test rules` (values in its expanding notation)."""
    matchers = ",".join(f'{k}="{v}"' for k, v in {"instance": instance, **labels}.items())
    return {"series": f"actord_{metric}{{{matchers}}}", "values": values}


def _alert(name: str, at: str, *expected: dict[str, str]) -> dict[str, Any]:
    return {
        "eval_time": at,
        "alertname": name,
        "exp_alerts": [{"exp_labels": {"severity": "warning", **labels}} for labels in expected],
    }


def test_the_alerting_rules_check_and_fire_on_faults_only(tmp_path: Path) -> None:
    promtool = require("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = tmp_path / "rules.yml"
    rules.write_text(_without_annotations(ALERTS.read_text()))
    trouble = sorted({reason.value for reason in DeadLetterReason} - EXPECTED)
    # One daemon per reason (its `instance`): each had a single dead letter at minute 10.
    series = [_series("dead_letters_total", f"{r}:9464", "0x10 1x30", reason=r) for r in trouble]
    series += [
        # Thousands of expected ones, on a daemon of their own: never an alert.
        _series("dead_letters_total", "s:9464", "0+500x40", reason="stopped"),
        _series("actor_restarts_total", "r:9464", "0x10 1x30", actor="fft#1", pool="fft"),
        _series("actor_restarts_total", "r:9464", "0x40", actor="fft#0", pool="fft"),
        # A store over half full from minute 0; a pool full all along (backpressure only).
        _series("actor_mailbox_depth", "b:9464", "40000x40", actor="store", pool="store"),
        _series("actor_mailbox_capacity", "b:9464", "65536x40", actor="store", pool="store"),
        _series("actor_mailbox_depth", "p:9464", "8x40", actor="parser#0", pool="parser"),
        _series("actor_mailbox_capacity", "p:9464", "8x40", actor="parser#0", pool="parser"),
    ]
    faults = [{"instance": f"{r}:9464", "reason": r} for r in trouble]
    checks = [
        _alert("ActordDeadLetters", "9m"),
        _alert("ActordDeadLetters", "15m", *faults),
        _alert("ActordDeadLetters", "25m"),  # ten minutes without one: resolved
        _alert("ActordActorRestarts", "15m", {"instance": "r:9464", "actor": "fft#1"}),
        _alert("ActordActorRestarts", "30m"),
        _alert("ActordStoreBacklog", "3m"),  # pending: not yet 5 minutes
        _alert("ActordStoreBacklog", "10m", {"instance": "b:9464"}),
    ]
    spec = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": checks}],
    }
    tests = tmp_path / "tests.yml"
    tests.write_text(json.dumps(spec))  # JSON is YAML
    result = subprocess.run(
        [promtool, "test", "rules", str(tests)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_prometheus_example_loads_the_rules() -> None:
    promtool = require("promtool")
    config = ROOT / "grafana" / "prometheus.yml"
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_provisioning_examples_point_at_the_dashboard() -> None:
    provisioning = ROOT / "grafana" / "provisioning"
    datasource = (provisioning / "datasources" / "prometheus.yml").read_text()
    dashboards = (provisioning / "dashboards" / "actord.yml").read_text()
    assert "type: prometheus" in datasource and "apiVersion: 1" in datasource
    assert "type: file" in dashboards and "path:" in dashboards


def _substitute(expr: str, instance: str) -> str:
    return (
        expr.replace("$__rate_interval", "5m")
        .replace("$actor", ".*")
        .replace("$instance", instance)  # a regex matcher: its dots match themselves too
    )


# Panels of the Ray pools: the observed daemon runs no Ray pool (tests/test_remote.py checks
# that the collector exports these names, from a real cluster).
_RAY_ONLY = ("actord_remote_", "actord_ray_")


@pytest.mark.parametrize(("panel", "expr"), _targets(), ids=[t[0] for t in _targets()])
def test_every_panel_returns_data(observed: Observed, panel: str, expr: str) -> None:
    if any(name in expr for name in _RAY_ONLY):
        assert "Ray" in panel, f"{panel}: a Ray panel says so in its title"
        return
    prometheus = observed.prometheus
    result = prometheus.query(_substitute(expr, observed.instance))
    assert result, f"{panel}: no data for {expr}"
    values = [float(r["value"][1]) for r in result]
    assert any(v == v for v in values), f"{panel}: only NaN"  # some real number
    # Each series is the daemon's own (an aggregation that dropped `instance` would sum
    # daemons), and another daemon's figures are not shown.
    assert {r["metric"].get("instance") for r in result} == {observed.instance}, panel
    assert prometheus.query(_substitute(expr, "127.0.0.2:1")) == [], panel


def test_mailbox_saturation_is_a_fraction_of_each_mailbox(observed: Observed) -> None:
    (expr,) = _exprs(_panel("saturation"))
    ratios = observed.prometheus.values(_substitute(expr, observed.instance))
    pools = {json.loads(labels)["pool"]: ratio for labels, ratio in ratios.items()}
    assert {"store", "parser", "fft"} <= set(pools)
    assert all(0 <= ratio <= 1 for ratio in pools.values()), pools
