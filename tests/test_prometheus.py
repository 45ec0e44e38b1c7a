"""A real Prometheus scrapes a real daemon that ran real jobs: the numbers, not just names."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

from actord import DeadLetterReason
from actors.fft import default_engine, transform
from actors.model import Transform
from actors.reader import synthetic_chunk

from ._prometheus import Observed, require


def _exposition(observed: Observed) -> str:
    url = observed.daemon.call("status")["metrics"]
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def test_promtool_has_nothing_to_report_on_the_exposition(observed: Observed) -> None:
    promtool = require("promtool")
    text = _exposition(observed)
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert "actord_actor_messages_total{" in text and "process_cpu_seconds_total" in text


def test_message_rates_per_actor_are_real(observed: Observed) -> None:
    prom = observed.prometheus
    handled = prom.values("sum by (actor) (increase(actord_actor_messages_total[5m]))")
    by_actor = {eval_actor(k): v for k, v in handled.items()}
    assert by_actor["store"] >= 40  # a note from the writers for each unit written, at least
    assert by_actor["parser#0"] + by_actor["parser#1"] >= 20  # 200,000 lines in blocks
    assert by_actor["fft#0"] + by_actor["fft#1"] >= 40  # 48 chunks (a retry may add one)
    rates = prom.values('rate(actord_actor_messages_total{actor="store"}[5m])')
    assert sum(rates.values()) > 0


def test_mailboxes_and_thread_cpu_are_real(observed: Observed) -> None:
    prom = observed.prometheus
    capacity = prom.values('actord_actor_mailbox_capacity{pool="parser"}')
    assert sorted(capacity.values()) == [8.0, 8.0]

    def actors(values: dict[str, float]) -> set[str]:
        return {json.loads(labels)["actor"] for labels in values}

    depth = prom.values("actord_actor_mailbox_depth")
    capacities = prom.values("actord_actor_mailbox_capacity")
    assert len(depth) >= 7 and actors(depth) == actors(capacities)  # one of each per actor
    # Every depth is bounded by its own mailbox's capacity (a join on the labels, in PromQL).
    bounded = prom.values("actord_actor_mailbox_depth <= actord_actor_mailbox_capacity")
    assert actors(bounded) == actors(depth)
    fft_cpu = prom.values('sum(increase(actord_actor_cpu_seconds_total{pool="fft"}[5m]))')
    # The workload's 48 FFTs of 256x256 ran on the workers' own threads: at least half the
    # CPU time the same chunks take here (generated and transformed by the same engine).
    started = time.thread_time()
    for index in range(48):
        chunk = synthetic_chunk(0, index, (256, 256))
        transform(chunk, Transform.FFT2, "complex128", default_engine())
    assert _one(fft_cpu) > 0.5 * (time.thread_time() - started)
    threads = prom.values("sum(actord_actor_cpu_seconds_total)")
    process = prom.values("process_cpu_seconds_total")
    # Per-thread figures, not the process's copied onto every thread: they sum to less.
    assert 0 < _one(threads) <= _one(process)
    workers = prom.values("sum(actord_worker_process_cpu_seconds_total)")
    assert _one(workers) > 0.1  # the parse worker processes did the parsing


def test_job_and_control_series(observed: Observed) -> None:
    prom = observed.prometheus
    jobs = prom.values('actord_jobs{state="done"}')
    assert sum(jobs.values()) == 2
    assert sum(prom.values("actord_job_units_total").values()) >= 48 + 1
    assert list(prom.values("actord_job_lines_total").values()) == [200_000.0]
    calls = prom.values('actord_control_requests_total{method="submit",code="ok"}')
    assert list(calls.values()) == [2.0]


def test_a_healthy_daemon_has_no_dead_letters_and_no_alert(observed: Observed) -> None:
    prom = observed.prometheus
    # Two jobs ran to the end (the workload): no message went unhandled, of any reason.
    dead = prom.values("sum by (reason) (actord_dead_letters_total)")
    assert len(dead) == len(DeadLetterReason) and set(dead.values()) == {0.0}, dead
    # The alerting rules loaded, evaluate without error, and none is pending or firing.
    rules = prom.rules()
    assert {rule["name"] for rule in rules} >= {"ActordDeadLetters", "ActordActorRestarts"}
    for rule in rules:
        assert rule["health"] == "ok", rule
        assert rule["state"] == "inactive", rule


def test_actorctl_metrics_prints_the_key_figures(observed: Observed) -> None:
    result = observed.daemon.ctl("metrics")
    assert result.returncode == 0, result.stderr
    table, totals = result.stdout.split("\n\n", 1)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["ACTOR", "MESSAGES", "ERRORS"]
    assert {line.split()[0] for line in lines[1:]} >= {"store", "parser#0", "fft#0"}
    assert any(line.split()[:3] == ["jobs", "log", "done"] for line in totals.splitlines())
    # The figures themselves, as scripts read them (the table's are for people).
    scripted = observed.daemon.ctl("metrics", "--json")
    assert scripted.returncode == 0, scripted.stderr
    rows = {row["actor"]: row for row in json.loads(scripted.stdout)["actors"]}
    assert rows["store"]["messages"] > 0 and rows["fft#0"]["cpu_s"] > 0


def _one(values: dict[str, float]) -> float:
    (value,) = values.values()
    return value


def eval_actor(labels: str) -> str:
    return str(json.loads(labels)["actor"])
