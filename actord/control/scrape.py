"""`actorctl metrics`: scrape the daemon's /metrics as Prometheus would and show the key
figures, per actor and daemon-wide."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from .human import Column, Output, count, duration, size, table

__all__ = ["Figures", "scrape", "show"]

Figures = tuple[list[dict[str, Any]], dict[str, float]]  # (per actor, totals)

_PER_ACTOR: Final = {
    "actord_actor_errors_total": "errors",
    "actord_actor_restarts_total": "restarts",
    "actord_actor_mailbox_depth": "depth",
    "actord_actor_mailbox_capacity": "capacity",
}
# Daemon-wide series: (name shown, how its value reads).
_TOTALS: Final[dict[str, tuple[str, Callable[[float], str]]]] = {
    "actord_dead_letters_total": ("dead letters", count),
    "actord_jobs": ("jobs", count),
    "actord_control_requests_total": ("control requests", count),
    "actord_control_connections": ("control connections", count),
    "actord_worker_process_cpu_seconds_total": ("worker process cpu", duration),
    "process_resident_memory_bytes": ("resident memory", size),
    "process_cpu_seconds_total": ("process cpu", duration),
}


def scrape(url: str, timeout: float) -> Figures:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the daemon's
        text = response.read().decode()
    rows: dict[str, dict[str, Any]] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            actor = sample.labels.get("actor")
            if actor is None:
                if sample.name in _TOTALS:
                    key = _TOTALS[sample.name][0] + "".join(
                        f" {v}" for k, v in sorted(sample.labels.items()) if k != "mode"
                    )
                    totals[key] = totals.get(key, 0.0) + sample.value
                continue
            row = rows.setdefault(actor, {"actor": actor, "messages": 0, "cpu_s": 0.0})
            name = sample.name
            if name == "actord_actor_messages_total":
                row["messages"] += int(sample.value)
            elif name == "actord_actor_cpu_seconds_total":
                row["cpu_s"] = row["cpu_s"] + sample.value
            elif name == "actord_actor_handle_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets.setdefault(actor, []).append((bound, sample.value))
            elif name in _PER_ACTOR:
                row[_PER_ACTOR[name]] = int(sample.value)
    for actor, row in rows.items():
        row["cpu_s"] = round(row["cpu_s"], 3)
        p99 = _quantile(0.99, buckets.get(actor, []))
        row["handle_p99"] = p99  # seconds, as `actors` gives it
    return list(rows.values()), totals


def _quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """The upper bound of the bucket holding quantile `q`, in seconds (None without
    samples)."""
    cumulative.sort()
    if not cumulative or cumulative[-1][1] == 0:
        return None
    wanted = q * cumulative[-1][1]
    for bound, samples in cumulative:
        if samples >= wanted:
            return bound if bound != float("inf") else None
    return None


def _p99(row: Mapping[str, Any]) -> str:
    # A bucket's upper bound (the buckets are powers of two), not a measured figure: "<=".
    value = row.get("handle_p99")
    return "-" if value is None else f"<={duration(value)}"


_COLUMNS: Final = (
    Column("ACTOR", lambda r: str(r["actor"])),
    Column("MESSAGES", lambda r: count(r.get("messages")), right=True),
    Column("ERRORS", lambda r: count(r.get("errors")), right=True),
    Column("RESTARTS", lambda r: count(r.get("restarts")), right=True),
    Column("DEPTH", lambda r: count(r.get("depth")), right=True),
    Column("CAPACITY", lambda r: count(r.get("capacity")), right=True),
    Column("CPU", lambda r: duration(r.get("cpu_s")), right=True),
    Column("HANDLE_P99", _p99, right=True),
)


def show(figures: Figures, as_json: bool, out: Output) -> None:
    rows, totals = figures
    if as_json:
        out.line(json.dumps({"actors": rows, "totals": totals}))
        return
    table(rows, _COLUMNS, out)
    out.line()
    shown = {key: value for key, value in totals.items() if value}
    # The zeros (every known method, reason and state) say nothing here.
    width = max((len(key) for key in shown), default=0)
    for key, value in sorted(shown.items()):
        out.line(f"{key:<{width}}  {_render(key)(value)}")


def _render(key: str) -> Callable[[float], str]:
    """How a total reads: by its series' name, which its labels follow after a space."""
    for name, render in _TOTALS.values():
        if key == name or key.startswith(name + " "):
            return render
    return count
