"""`actorctl`: one subcommand per control method; tables for people, ``--json`` for scripts.

Exit codes: 0 done; 1 the command failed (an error from the daemon, or a watched job that
failed or was cancelled); 2 bad usage; 3 the daemon is not running (as `systemctl
is-active`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final, TextIO

from prometheus_client.parser import text_string_to_metric_families

from .. import __version__
from ..runtime.errors import ExitCode
from .client import Client, NotRunning, RemoteError, default_socket

__all__ = ["main"]

OK, FAILED, USAGE, NOT_RUNNING = ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.NOT_RUNNING

_JOB_COLUMNS: Final = (
    "id",
    "kind",
    "state",
    "done",
    "total",
    "crash_retries",
    "started",
    "ended",
    "output",
    "error",
)
_TIMES: Final = frozenset({"created", "started", "ended"})  # RFC 3339 on the wire
_ACTOR_COLUMNS: Final = (
    "name",
    "state",
    "processed",
    "errors",
    "restarts",
    "mailbox_depth",
    "mailbox_capacity",
    "native_thread_id",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actorctl",
        description="Control a running actord over its Unix socket (msgpack-RPC). Exit codes: "
        "0 ok, 1 command failed, 2 bad usage, 3 actord not running.",
    )
    parser.add_argument("--version", action="version", version=f"actorctl {__version__}")
    _common(parser, None)
    parser.set_defaults(json=False, timeout=30.0)
    # The same options after the subcommand too: `actorctl jobs --json`.
    common = argparse.ArgumentParser(add_help=False)
    _common(common, argparse.SUPPRESS)
    sub = _Sub(parser.add_subparsers(dest="command", metavar="COMMAND"), common)
    sub.add_parser("ping", help="check that the daemon answers")
    sub.add_parser("status", help="version, pid, uptime, config generation, actor/job counts")
    sub.add_parser("actors", help="every actor and pool member with its statistics")
    jobs = sub.add_parser("jobs", help="the newest jobs")
    jobs.add_argument("--limit", type=int, default=100, help="how many (100)")
    for name, text in (("job", "one job"), ("cancel", "cancel a job"), ("watch", "follow a job")):
        sub.add_parser(name, help=text).add_argument("id", help="job id, e.g. log-3")
    submit = sub.add_parser("submit", help="submit a log or FFT job")
    submit.add_argument("kind", choices=("log", "fft"))
    submit.add_argument("output", help="output file (under an allowed output root)")
    submit.add_argument("--input", help="input file (under an allowed input root)")
    submit.add_argument("--format", help="log format: seed, python, syslog, apache-error, common")
    submit.add_argument("--pattern", help="log regex with named groups (instead of --format)")
    submit.add_argument("--transform", choices=("fft2", "rfft2"), help="FFT transform")
    submit.add_argument("--dtype", choices=("complex128", "complex64"), help="FFT output dtype")
    submit.add_argument("--synthetic", help="N,H,W: generate the FFT input instead of --input")
    submit.add_argument("--key", help="idempotency key: the same key never runs twice")
    submit.add_argument(
        "--overwrite", action="store_true", help="replace an output that already exists"
    )
    submit.add_argument("--wait", action="store_true", help="follow the job until it ends")
    send = sub.add_parser("send", help="send an admin message to an actor")
    send.add_argument("actor")
    send.add_argument("message", help="'ping', or a command name")
    send.add_argument("args", nargs="*", metavar="KEY=VALUE", help="command arguments")
    sub.add_parser("restart", help="restart an actor (each member of a pool)").add_argument("actor")
    scale = sub.add_parser("scale", help="resize a pool")
    scale.add_argument("pool")
    scale.add_argument("size", type=int)
    sub.add_parser("metrics", help="key figures from the daemon's Prometheus endpoint")
    sub.add_parser("reload", help="reload the daemon's config (as SIGHUP)")
    sub.add_parser("shutdown", help="drain and stop the daemon (as SIGTERM)")
    return parser


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--socket",
        default=default,
        help="control socket (default: $ACTORD_SOCKET, else the daemon's default)",
    )
    parser.add_argument("--json", action="store_true", default=default, help="print JSON")
    parser.add_argument("--timeout", type=float, default=default, help="seconds per reply (30)")


class _Sub:
    """add_parser with the common options as a parent."""

    def __init__(self, actions: Any, common: argparse.ArgumentParser) -> None:
        self.actions = actions
        self.common = common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self.actions.add_parser(
            name, parents=[self.common], **kwargs
        )
        return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return USAGE
    try:
        params = _params(args)
    except ValueError as error:
        parser.error(str(error))
    path = args.socket or default_socket()
    out = sys.stdout
    try:
        with Client(path, timeout=args.timeout) as client:
            return _command(client, args, params, out)
    except NotRunning as error:
        if args.command == "status" and args.json:
            print(json.dumps({"running": False, "socket": path}), file=out)
        print(f"actorctl: {error}", file=sys.stderr)
        return NOT_RUNNING
    except RemoteError as error:
        print(f"actorctl: {error.code}: {error.message}", file=sys.stderr)
        return FAILED
    except (OSError, TimeoutError) as error:
        print(f"actorctl: {path}: {error}", file=sys.stderr)
        return FAILED


def _params(args: argparse.Namespace) -> list[Any]:
    """The method's params from the command line (ValueError on bad usage)."""
    command = args.command
    if command in ("job", "cancel", "watch"):
        return [args.id]
    if command == "jobs":
        return [args.limit]
    if command == "restart":
        return [args.actor]
    if command == "scale":
        return [args.pool, args.size]
    if command == "send":
        if args.message == "ping":
            return [args.actor, "ping"]
        pairs = dict(_pair(text) for text in args.args)
        return [args.actor, "command", {"command": args.message, "args": pairs}]
    if command == "submit":
        return [_job(args)]
    return []


def _pair(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # numbers, true/false, null, "strings"
    except json.JSONDecodeError:
        return key, value


def _job(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name in ("format", "pattern", "transform", "dtype"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.synthetic:
        try:
            options["synthetic"] = [int(n) for n in args.synthetic.split(",")]
        except ValueError:
            raise ValueError(f"--synthetic takes N,H,W, got {args.synthetic!r}") from None
    job: dict[str, Any] = {
        "kind": args.kind,
        "output": os.path.abspath(args.output),
        "input": None if args.input is None else os.path.abspath(args.input),
        "options": options,
    }
    if args.key:
        job["idempotency_key"] = args.key
    if args.overwrite:
        job["overwrite"] = True
    return job


def _command(client: Client, args: argparse.Namespace, params: list[Any], out: TextIO) -> int:
    command = args.command
    if command == "submit":
        job = client.call("submit", *params)
        if not args.wait:
            _show(job, args.json, out, _JOB_COLUMNS)
            return OK
        return _watch(client, job["id"], args.json, out)
    if command == "watch":
        return _watch(client, params[0], args.json, out)
    if command == "metrics":
        return _metrics(client.call("status").get("metrics"), args.json, out)
    result = client.call(command, *params)
    columns = {"jobs": _JOB_COLUMNS, "job": _JOB_COLUMNS, "cancel": _JOB_COLUMNS}
    _show(result, args.json, out, columns.get(command, _ACTOR_COLUMNS))
    return OK


def _watch(client: Client, job_id: str, as_json: bool, out: TextIO) -> int:
    bar = _Bar(sys.stderr) if not as_json and sys.stderr.isatty() else None

    def progress(method: str, params: tuple[Any, ...]) -> None:
        if as_json:
            print(json.dumps({"event": method, "job": params[0]}), file=out, flush=True)
        elif bar is not None:
            bar.show(params[0])

    final = client.stream("watch", job_id, on_notification=progress, timeout=None)
    if bar is not None:
        bar.done()
    _show(final, as_json, out, _JOB_COLUMNS)
    return OK if final["state"] == "done" else FAILED


_METRIC_COLUMNS: Final = (
    "actor",
    "messages",
    "errors",
    "restarts",
    "depth",
    "capacity",
    "cpu_s",
    "handle_p99_ms",
)


def _metrics(url: str | None, as_json: bool, out: TextIO) -> int:
    """Scrape the daemon's /metrics (as Prometheus would) and show the key figures."""
    if not url:
        print("actorctl: this daemon serves no metrics (metrics.address is empty)", file=sys.stderr)
        return FAILED
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the daemon's URL
        text = response.read().decode()
    rows: dict[str, dict[str, Any]] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            actor = sample.labels.get("actor")
            if actor is None:
                if sample.name in _TOTALS:
                    key = _TOTALS[sample.name] + "".join(
                        f" {v}" for k, v in sorted(sample.labels.items()) if k != "mode"
                    )
                    totals[key] = totals.get(key, 0.0) + sample.value
                continue
            row = rows.setdefault(actor, {"actor": actor, "messages": 0, "cpu_s": 0.0})
            name = sample.name
            if name == "actord_actor_messages_total":
                row["messages"] += int(sample.value)
            elif name == "actord_actor_cpu_seconds_total":
                row["cpu_s"] = round(row["cpu_s"] + sample.value, 3)
            elif name == "actord_actor_handle_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets.setdefault(actor, []).append((bound, sample.value))
            elif name in _PER_ACTOR:
                row[_PER_ACTOR[name]] = int(sample.value)
    for actor, row in rows.items():
        row["handle_p99_ms"] = _quantile(0.99, buckets.get(actor, []))
    if as_json:
        print(json.dumps({"actors": list(rows.values()), "totals": totals}), file=out)
        return OK
    _table(list(rows.values()), _METRIC_COLUMNS, out)
    print(file=out)
    for key, value in sorted(totals.items()):
        if value:  # the zeros (every known method, reason and state) say nothing here
            print(f"{key:<40} {value:g}", file=out)
    return OK


_PER_ACTOR: Final = {
    "actord_actor_errors_total": "errors",
    "actord_actor_restarts_total": "restarts",
    "actord_actor_mailbox_depth": "depth",
    "actord_actor_mailbox_capacity": "capacity",
}
_TOTALS: Final = {
    "actord_dead_letters_total": "dead letters",
    "actord_jobs": "jobs",
    "actord_control_requests_total": "control requests",
    "actord_control_connections": "control connections",
    "actord_worker_process_cpu_seconds_total": "worker process cpu seconds",
    "process_resident_memory_bytes": "resident memory bytes",
}


def _quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """The upper bound of the bucket holding quantile `q`, in ms (None without samples)."""
    cumulative.sort()
    if not cumulative or cumulative[-1][1] == 0:
        return None
    wanted = q * cumulative[-1][1]
    for bound, count in cumulative:
        if count >= wanted:
            return round(bound * 1e3, 3) if bound != float("inf") else None
    return None


class _Bar:
    """A one-line progress bar redrawn in place on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def show(self, job: dict[str, Any]) -> None:
        done, total = job["done"], job["total"]
        width = 30
        filled = width * done // total if total else 0
        figure = f"{done}/{total}" if total else f"{done}/?"
        line = f"\r{job['id']} {job['state']:<9} [{'#' * filled}{'.' * (width - filled)}] {figure}"
        self.stream.write(line)
        self.stream.flush()

    def done(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _show(result: Any, as_json: bool, out: TextIO, columns: Sequence[str]) -> None:
    if as_json:
        print(json.dumps(result, default=list), file=out)
    elif isinstance(result, list | tuple) and all(isinstance(r, dict) for r in result):
        _table([dict(r) for r in result], columns, out)
    elif isinstance(result, dict):
        width = max((len(str(k)) for k in result), default=0)
        for key, value in result.items():
            print(f"{key:<{width}}  {_cell(value)}", file=out)
    else:
        print(result, file=out)


def _table(rows: list[dict[str, Any]], columns: Sequence[str], out: TextIO) -> None:
    cells = [
        [_local(row.get(c)) if c in _TIMES else _cell(row.get(c)) for c in columns] for row in rows
    ]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    line: Callable[[Sequence[str]], str] = lambda values: "  ".join(  # noqa: E731
        v.ljust(w) for v, w in zip(values, widths, strict=True)
    ).rstrip()
    print(line([c.upper() for c in columns]), file=out)
    for row in cells:
        print(line(row), file=out)


def _local(value: Any) -> str:
    """An RFC 3339 time from the daemon, in this machine's local time, to the second."""
    if not isinstance(value, str):
        return _cell(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={_cell(v)}" for k, v in value.items() if v is not None)
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value)
    return str(value)
