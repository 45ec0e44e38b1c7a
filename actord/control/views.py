"""What actorctl shows people for the answers of the daemon's methods (``--json`` prints
them as they are): the actors table, the status, and a line for each action done."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from . import jobview
from .human import Colour, Column, Output, count, duration, pairs, size, table

__all__ = ["VIEWS", "plain"]

_ACTOR_STATES: Final = {"running": Colour.GREEN, "failed": Colour.RED, "stopped": Colour.DIM}


def _actors(result: Any, out: Output) -> None:
    rows = list(result)
    columns = [
        Column("NAME", lambda a: str(a.get("name"))),
        Column("STATE", lambda a: str(a.get("state")), lambda a: _ACTOR_STATES.get(a["state"])),
        Column("PROCESSED", lambda a: count(a.get("processed")), right=True),
        Column("ERRORS", lambda a: count(a.get("errors")), right=True),
        Column("RESTARTS", lambda a: count(a.get("restarts")), right=True),
        Column("MAILBOX", _mailbox, right=True),
        Column("P99", lambda a: _bucket(a.get("handle_p99")), right=True),
        Column("TID", lambda a: str(a.get("native_thread_id", "-")), right=True),
    ]
    if any("commands" in a for a in rows):  # daemons that say which commands each takes
        columns.append(Column("COMMANDS", lambda a: ",".join(a.get("commands") or ()) or "-"))
    table(rows, columns, out)


def _mailbox(actor: Mapping[str, Any]) -> str:
    return f"{count(actor.get('mailbox_depth'))}/{count(actor.get('mailbox_capacity'))}"


def _bucket(seconds: Any) -> str:
    # Handle times are kept in power-of-two buckets: the figure is a bucket's upper bound.
    if not isinstance(seconds, int | float) or not seconds:
        return "-"
    return f"<={duration(seconds)}"


_STATUS_SHOWN: Final = (
    "version",
    "pid",
    "uptime",
    "socket",
    "config",
    "generation",
    "state_dir",
    "metrics",
    "actors",
    "pools",
    "connections",
    "draining",
)
_JOB_COUNTS: Final = ("running", "queued", "done", "failed", "cancelled")


def _status(result: Any, out: Output) -> None:
    status = dict(result)
    out.line(
        f"actord {status.get('version')}, pid {status.get('pid')}, "
        f"up {duration(status.get('uptime'))}"
        + (", " + out.paint("draining", Colour.YELLOW) if status.get("draining") else "")
    )
    rows = [
        ("socket", _value("socket", status.get("socket"))),
        ("config", f"{status.get('config') or '(built-in defaults)'}"),
        ("generation", _value("generation", status.get("generation"))),
        ("state dir", _value("state_dir", status.get("state_dir"))),
        ("metrics", _value("metrics", status.get("metrics")) if status.get("metrics") else "off"),
        ("actors", _value("actors", status.get("actors"))),
        ("pools", _pools(status.get("pools"))),
        ("connections", _value("connections", status.get("connections"))),
    ]
    counts = {name: status.get(f"jobs_{name}") for name in _JOB_COUNTS}
    if all(isinstance(n, int) for n in counts.values()):
        rows.append(("jobs", ", ".join(f"{count(n)} {name}" for name, n in counts.items())))
    shown = {*_STATUS_SHOWN, *(f"jobs_{name}" for name in _JOB_COUNTS)}
    rows += [(k.replace("_", " "), _value(k, v)) for k, v in status.items() if k not in shown]
    pairs(rows, out)


def _pool(pool: Mapping[str, Any]) -> str:
    """``2 (configured 4, scaled)``: the size now, and the configured one if it differs."""
    size, configured = pool.get("size"), pool.get("configured")
    if pool.get("scaled") and size != configured:
        return f"{_value('size', size)} (configured {_value('size', configured)}, scaled)"
    return _value("size", size)


def _pools(pools: Any) -> str:
    if not isinstance(pools, Mapping) or not pools:
        return "-"
    return ", ".join(
        f"{name} {_pool(pool)}" for name, pool in pools.items() if isinstance(pool, Mapping)
    )


def _value(key: str, value: Any) -> str:
    """A value of a map the daemon sent, read by its key's name."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if key.endswith("bytes"):
            return size(value)
        if key.endswith(("seconds", "uptime", "_s")):
            return duration(value)
        return count(value)
    if isinstance(value, list | tuple):
        return ", ".join(_value(key, v) for v in value) or "none"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_value(str(k), v)}" for k, v in value.items())
    return str(value)


def plain(result: Any, out: Output) -> None:
    if isinstance(result, Mapping):
        pairs([(str(k).replace("_", " "), _value(str(k), v)) for k, v in result.items()], out)
    else:
        out.line(str(result))


def _jobs(result: Any, out: Output) -> None:
    jobview.job_table(list(result), out)


def _job_detail(result: Any, out: Output) -> None:
    jobview.job_details(result, out)


def _send(result: Any, out: Output) -> None:
    if "command" in result:
        out.line(f"{result['command']} delivered to {result.get('delivered')}")
    else:
        out.line(f"{result.get('actor')} answered (thread {result.get('native_thread_id')})")


def _restart(result: Any, out: Output) -> None:
    members = result.get("members")
    out.line(f"{result.get('actor')} restarting ({count(members)} member{'s' * (members != 1)})")


def _scale(result: Any, out: Output) -> None:
    size, current = result.get("size"), result.get("from")
    if not isinstance(current, int) or not isinstance(size, int) or size <= current:
        out.line(f"{result.get('pool')} resized to {count(size)}")
        return
    out.line(
        f"{result.get('pool')} growing from {count(current)} to {count(size)} members, "
        f"{count(result.get('step'))} started at a time (actorctl actors shows them)"
    )


def _reload(result: Any, out: Output) -> None:
    out.line(f"reloaded: config generation {result.get('generation')}")
    changed = result.get("changed")
    if isinstance(changed, Mapping):
        _changes(changed, out, none="nothing changed")
    pending = result.get("restart_needed") or ()
    if pending:
        out.line("a restart is needed for:")
        for key in pending:
            out.line(f"  {key}")
    for pool, members in (result.get("scaled_kept") or {}).items():
        out.line(f"pool {pool} keeps its scaled size {members}: `actorctl scale` undoes it")
    shown = ("generation", "restart_needed", "changed", "scaled_kept")
    rest = {k: v for k, v in result.items() if k not in shown}
    if rest:
        plain(rest, out)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def _changes(changed: Mapping[str, Any], out: Output, *, none: str) -> None:
    if not changed:
        out.line(none)
    for key, (before, after) in changed.items():
        out.line(f"  {key}: {_toml(before)} -> {_toml(after)}")


def _config(result: Any, out: Output) -> None:
    """The running config as TOML (as `actord check-config` prints it), then what reloads
    changed since the start and what waits for a restart, as comments."""
    config = result.get("config") or {}
    out.line(f"# config file: {result.get('path') or 'none (built-in defaults)'}")
    out.line(f"# generation {result.get('generation')}")
    tables = {k: v for k, v in config.items() if isinstance(v, Mapping)}
    for key, value in config.items():
        if key not in tables:
            out.line(f"{key} = {_toml(value)}")
    pools = result.get("pools") or {}
    for name, section in tables.items():
        out.line()
        out.line(f"[{name}]")
        for key, value in section.items():
            pool = pools.get(name) if key == "size" else None
            if isinstance(pool, Mapping) and pool.get("scaled") and pool.get("size") != value:
                # Beside the configured size: the one `scale` set, which a reload keeps.
                out.line(f"{key} = {_toml(value)}  # scaled to {pool.get('size')} (actorctl scale)")
            else:
                out.line(f"{key} = {_toml(value)}")
    out.line()
    out.line("# changed since the start (by reloads):")
    changed = result.get("changed_since_start") or {}
    for key, (before, after) in changed.items():
        out.line(f"#   {key}: {_toml(before)} -> {_toml(after)}")
    if not changed:
        out.line("#   nothing")
    pending = result.get("restart_needed") or ()
    out.line("# waiting for a restart: " + (", ".join(pending) if pending else "nothing"))


def _shutdown(result: Any, out: Output) -> None:
    out.line("actord is stopping: running jobs drain, then it exits")


VIEWS: Final[dict[str, Callable[[Any, Output], None]]] = {
    "actors": _actors,
    "status": _status,
    "jobs": _jobs,
    "job": _job_detail,
    "send": _send,
    "restart": _restart,
    "scale": _scale,
    "reload": _reload,
    "config": _config,
    "shutdown": _shutdown,
}
