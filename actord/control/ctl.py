"""`actorctl`: one subcommand per control method; figures for people, ``--json`` for scripts.

Exit codes: 0 done; 1 the command failed (an error from the daemon, a watched job that failed
or was cancelled, a cancel that came too late); 2 bad usage; 3 the daemon is not running (as
`systemctl is-active`); 130 interrupted (Ctrl-C). Output cut short by its reader (``| head``)
ends the command quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import select
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TextIO

from .. import __version__
from ..runtime.errors import ExitCode
from . import completion, jobview, scrape, views
from .client import Client, NotRunning, RemoteError, default_socket
from .human import Output, OutputClosed

__all__ = ["main", "parser"]

OK, FAILED, USAGE, NOT_RUNNING = ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.NOT_RUNNING
INTERRUPTED: Final = 128 + signal.SIGINT  # as a shell reports a command Ctrl-C stopped
_JOBS_LIMIT: Final = 10_000  # the daemon's own bound on `jobs` (actors/service.py)
# A sanity bound on `scale`; the daemon refuses above its daemon.max_pool_size.
_POOL_LIMIT: Final = 4096
_VERSION_TIMEOUT: Final = 2.0  # `--version` asks a running daemon for its own, briefly


class _TopParser(argparse.ArgumentParser):
    """An unknown command's error lists the commands people use, not the internal ones."""

    def error(self, message: str) -> Any:
        super().error(message.replace(", '_names'", ""))


def parser() -> argparse.ArgumentParser:
    """actorctl's command line (also what `completion` generates the shell scripts from)."""
    top = _TopParser(
        prog="actorctl",
        description="Control a running actord over its Unix socket (msgpack-RPC). Exit codes: "
        "0 ok, 1 command failed, 2 bad usage, 3 actord not running, 130 interrupted.",
    )
    top.add_argument(
        "--version",
        action="store_true",
        help="show actorctl's version, and the daemon's when it is running",
    )
    _common(top, None)
    top.set_defaults(json=False, timeout=30.0)
    # The same options after the subcommand too: `actorctl jobs --json`.
    common = argparse.ArgumentParser(add_help=False)
    _common(common, argparse.SUPPRESS)
    sub = _Sub(top.add_subparsers(dest="command", metavar="COMMAND"), common)
    sub.add_parser("ping", help="check that the daemon answers")
    sub.add_parser("status", help="version, pid, uptime, config generation, actor/job counts")
    sub.add_parser("actors", help="every actor and pool member, with the commands it takes")
    jobs = sub.add_parser("jobs", help="the newest jobs")
    jobs.add_argument("--limit", type=_between(1, _JOBS_LIMIT), default=100, help="how many (100)")
    jobs.add_argument(
        "--state",
        choices=("queued", "running", "done", "failed", "cancelled"),
        help="only the jobs in this state",
    )
    for name, text in (("job", "one job"), ("cancel", "cancel a job"), ("watch", "follow a job")):
        command = sub.add_parser(name, help=text)
        completion.mark(command.add_argument("id", help="job id, e.g. log-3"), "jobs")
        if name == "watch":
            _quiet(command)
    _submit(sub.add_parser("submit", help="submit a log or FFT job"))
    send = sub.add_parser("send", help="send an admin message to an actor")
    completion.mark(send.add_argument("actor"), "actors")
    send.add_argument("message", help="'ping', or a command the actor takes (see `actors`)")
    send.add_argument("args", nargs="*", type=_pair, metavar="KEY=VALUE", help="command arguments")
    restart = sub.add_parser("restart", help="restart an actor (each member of a pool)")
    completion.mark(restart.add_argument("actor"), "actors")
    scale = sub.add_parser("scale", help="resize a pool")
    completion.mark(scale.add_argument("pool"), "pools")
    scale.add_argument(
        "size", type=_between(1, _POOL_LIMIT), help="members (1 to the daemon's max_pool_size)"
    )
    sub.add_parser("metrics", help="key figures from the daemon's Prometheus endpoint")
    sub.add_parser("reload", help="reload the daemon's config (as SIGHUP)")
    sub.add_parser(
        "config",
        help="the running daemon's config, what reloads changed and what waits for a restart",
    )
    shutdown = sub.add_parser("shutdown", help="drain and stop the daemon (as SIGTERM)")
    shutdown.add_argument(
        "--wait", action="store_true", help="return once the daemon has exited (see --timeout)"
    )
    shell = sub.add_parser(
        "completion",
        help="print a bash or zsh completion script",
        description="Print the completion script for SHELL. bash: actorctl completion bash > "
        "~/.local/share/bash-completion/completions/actorctl; zsh: actorctl completion zsh > "
        "a directory in $fpath/_actorctl.",
    )
    shell.add_argument("shell", choices=completion.SHELLS)
    # For the completion scripts: the names a job, actor or pool argument can take (no help:
    # not listed).
    sub.add_internal("_names").add_argument("kind", choices=completion.NAMES)
    return top


def _submit(submit: argparse.ArgumentParser) -> None:
    submit.add_argument("kind", choices=("log", "fft"))
    completion.mark(
        submit.add_argument("output", help="output file (under an allowed output root)"), "file"
    )
    completion.mark(
        submit.add_argument("--input", help="input file (under an allowed input root)"), "file"
    )
    submit.add_argument(
        "--format",
        choices=("seed", "python", "syslog", "apache-error", "common"),
        help="log format",
    )
    submit.add_argument("--pattern", help="log regex with named groups (instead of --format)")
    submit.add_argument("--transform", choices=("fft2", "rfft2"), help="FFT transform")
    submit.add_argument("--dtype", choices=("complex128", "complex64"), help="FFT output dtype")
    submit.add_argument(
        "--synthetic", type=_shape, help="N,H,W: generate the FFT input instead of --input"
    )
    submit.add_argument("--key", help="idempotency key: the same key never runs twice")
    submit.add_argument(
        "--overwrite", action="store_true", help="replace an output that already exists"
    )
    submit.add_argument("--wait", action="store_true", help="follow the job until it ends")
    _quiet(submit)


def _quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="no progress: only the line the job ends on (and the exit code)",
    )


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    completion.mark(
        parser.add_argument(
            "--socket",
            default=default,
            help="control socket (default: $ACTORD_SOCKET, else the daemon's default)",
        ),
        "file",
    )
    parser.add_argument("--json", action="store_true", default=default, help="print JSON")
    parser.add_argument(
        "--timeout", type=_seconds, default=default, help="seconds to wait for a reply (30)"
    )


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

    def add_internal(self, name: str) -> argparse.ArgumentParser:
        # Without `help`, argparse lists no such subcommand (and completion skips it).
        parser: argparse.ArgumentParser = self.actions.add_parser(name, parents=[self.common])
        return parser


# -- argument types: a bad value is a usage error (exit 2), said by argparse -------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _between(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number {low}-{high}, got {text!r}")
        return value

    return parse


def _shape(text: str) -> list[int]:
    try:
        shape = [int(n) for n in text.split(",")]
    except ValueError:
        shape = []
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"takes N,H,W (three positive numbers), got {text!r}")
    return shape


def _pair(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # numbers, true/false, null, "strings"
    except json.JSONDecodeError:
        return key, value


# -- running a command ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    out = Output(sys.stdout if stdout is None else stdout)
    path = args.socket or default_socket()
    try:
        code = _main(cli, args, path, out)
        out.flush()
        return code
    except OutputClosed:
        # The reader had what it wanted (`actorctl jobs | head -1`): not a failure, and not
        # one under `set -o pipefail` either.
        _quiet_stdout()
        return OK
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return INTERRUPTED


def _main(cli: argparse.ArgumentParser, args: argparse.Namespace, path: str, out: Output) -> int:
    if args.version:
        return _version(path, args.json, out)
    if args.command is None:
        cli.print_help()
        return USAGE
    if args.command == "completion":
        out.write(getattr(completion, args.shell)(cli))
        return OK
    try:
        with Client(path, timeout=args.timeout) as client:
            return _command(client, args, out)
    except NotRunning as error:
        if args.command == "_names":
            return NOT_RUNNING
        if args.command == "status" and args.json:
            out.line(json.dumps({"running": False, "socket": path}))
        else:
            _json_error(args, out, "not_running", str(error))
        _error(str(error))
        return NOT_RUNNING
    except RemoteError as error:
        _json_error(args, out, error.code, error.message)
        _error(f"{error.code}: {error.message}")
        return FAILED
    except TimeoutError:
        message = f"no answer from actord at {path} within {args.timeout:g}s (see --timeout)"
        _json_error(args, out, "timeout", message)
        _error(message)
        return FAILED
    except PermissionError as error:
        message = f"{path}: {error.strerror} (is this user in the daemon's socket group?)"
        _json_error(args, out, "forbidden", message)
        _error(message)
        return FAILED
    except OSError as error:
        message = f"{path}: {error.strerror or error}"
        _json_error(args, out, "connection", message)
        _error(message)
        return FAILED


def _json_error(args: argparse.Namespace, out: Output, code: str, message: str) -> None:
    """With --json, a failure is a JSON object on stdout too (its message also on stderr):
    a script reads one JSON value whatever happened."""
    if args.json:
        out.line(json.dumps({"error": {"code": code, "message": message}}))


def _error(message: str) -> None:
    print(f"actorctl: {message}", file=sys.stderr)


def _quiet_stdout() -> None:
    """After the reader of stdout went away: point stdout at /dev/null, so that Python's own
    flush at exit has nowhere to fail and nothing more is said."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _version(path: str, as_json: bool, out: Output) -> int:
    daemon: dict[str, Any] | None = None
    with (
        contextlib.suppress(NotRunning, RemoteError, OSError),
        Client(path, timeout=_VERSION_TIMEOUT) as client,
    ):
        daemon = client.call("status")
    if as_json:
        running = None if daemon is None else daemon.get("version")
        out.line(json.dumps({"actorctl": __version__, "actord": running, "socket": path}))
        return OK
    out.line(f"actorctl {__version__}")
    if daemon is None:
        out.line(f"actord not running at {path}")
    else:
        out.line(f"actord {daemon.get('version')} (pid {daemon.get('pid')}, {path})")
    return OK


def _command(client: Client, args: argparse.Namespace, out: Output) -> int:
    command = args.command
    if command == "submit":
        return _submit_job(client, args, out)
    if command == "watch":
        watcher = jobview.Watcher(out, as_json=args.json, quiet=args.quiet)
        return _follow(client, args.id, watcher)
    if command == "cancel":
        return _cancel(client, args.id, args.json, out)
    if command == "shutdown" and args.wait:
        return _shutdown_and_wait(client, args, out)
    if command == "metrics":
        return _metrics(client, args, out)
    if command == "_names":
        for name in _names(client, args.kind):
            out.line(name)
        return OK
    result = client.call(command, *_params(args))
    if args.json:
        out.line(json.dumps(result, default=list))
    else:
        views.VIEWS.get(command, views.plain)(result, out)
    return OK


def _params(args: argparse.Namespace) -> list[Any]:
    command = args.command
    if command == "job":
        return [args.id]
    if command == "jobs":
        return [args.limit] + ([args.state] if args.state else [])
    if command == "restart":
        return [args.actor]
    if command == "scale":
        return [args.pool, args.size]
    if command == "send":
        if args.message == "ping":
            return [args.actor, "ping"]
        return [args.actor, "command", {"command": args.message, "args": dict(args.args)}]
    return []


def _job(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name in ("format", "pattern", "transform", "dtype", "synthetic"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
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


def _submit_job(client: Client, args: argparse.Namespace, out: Output) -> int:
    job = client.call("submit", _job(args))
    if not args.wait:
        if args.json:
            out.line(json.dumps(job))
        else:
            out.line(
                f"{job['id']} {job['state']}: {job['kind']} {jobview.input_of(job)} -> "
                f"{job['output']} (actorctl watch {job['id']} follows it)"
            )
        return OK
    total = args.synthetic[0] if args.synthetic else None  # N chunks: known from the start
    hints = jobview.Hints.of(job, total=total)
    watcher = jobview.Watcher(out, as_json=args.json, hints=hints, quiet=args.quiet)
    watcher.event("submitted", job)
    return _follow(client, job["id"], watcher)


def _follow(client: Client, job_id: str, watcher: jobview.Watcher) -> int:
    """Show the job as it advances until it ends; 0 only if it ended done."""

    def progress(method: str, params: tuple[Any, ...]) -> None:
        if method == "progress" and params and isinstance(params[0], Mapping):
            watcher.progress(params[0])

    try:
        final = client.stream("watch", job_id, on_notification=progress, timeout=None)
    except KeyboardInterrupt:
        watcher.interrupted()
        _error(f"stopped watching; {job_id} goes on (actorctl watch {job_id})")
        raise
    watcher.end(final)
    state = final.get("state")
    if state == "done":
        return OK
    if state == "failed":
        _error(f"{job_id} failed: {final.get('error') or 'no reason given'}")
    else:
        _error(f"{job_id} was {state}")
    return FAILED


def _cancel(client: Client, job_id: str, as_json: bool, out: Output) -> int:
    job = client.call("cancel", job_id)
    state = job.get("state")
    cancelled_now = state == "cancelled" and not job.get("already_ended")
    if as_json:
        out.line(json.dumps(job))
    elif cancelled_now:
        out.line(f"{job_id} cancelled")
    if cancelled_now:
        return OK
    if state in jobview.ENDED:
        _error(f"{job_id} had already ended ({state}): nothing to cancel")
    else:  # its output is being published: the job ends done
        _error(f"{job_id} is publishing its output: too late to cancel, it will end done")
    return FAILED


def _shutdown_and_wait(client: Client, args: argparse.Namespace, out: Output) -> int:
    """`shutdown --wait`: ask for the stop, then return once the daemon's process has
    exited (1 if it has not within --timeout)."""
    pid = int(client.call("status")["pid"])
    try:
        exited = os.pidfd_open(pid)  # readable once the process has exited: no polling
    except OSError:
        exited = None  # another pid namespace (a container): wait for the socket instead
    try:
        result = client.call("shutdown")
        if not args.json:
            out.line(f"actord (pid {pid}) is stopping: running jobs drain, then it exits")
            out.flush()
        if exited is not None:
            gone = bool(select.select([exited], [], [], args.timeout)[0])
        else:
            gone = client.closed_within(args.timeout)
    finally:
        if exited is not None:
            os.close(exited)
    if not gone:
        _error(f"actord (pid {pid}) has not exited within {args.timeout:g}s (see --timeout)")
        return FAILED
    if args.json:
        out.line(json.dumps({**result, "exited": True, "pid": pid}))
    else:
        out.line(f"actord (pid {pid}) has exited")
    return OK


def _metrics(client: Client, args: argparse.Namespace, out: Output) -> int:
    url = client.call("status").get("metrics")
    if not url:
        _error("this daemon serves no metrics (metrics.address is empty)")
        return FAILED
    try:
        figures = scrape.scrape(url, timeout=min(args.timeout, 10.0))
    except OSError as error:
        _error(f"{url}: {getattr(error, 'reason', None) or error}")
        return FAILED
    scrape.show(figures, args.json, out)
    return OK


def _names(client: Client, kind: str) -> list[str]:
    if kind == "jobs":
        return [str(job["id"]) for job in reversed(client.call("jobs", 200))]
    actors = client.call("actors")
    if kind == "pools":
        return sorted({str(a["pool"]) for a in actors if a.get("pool") != a.get("name")})
    names = [str(a["name"]) for a in actors]
    return names + sorted({str(a["pool"]) for a in actors} - set(names))
