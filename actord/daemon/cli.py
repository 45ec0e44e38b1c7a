"""Command-line entry points: `actord` (the daemon) and `actorctl` (its client).

`actord demo` runs a log job and an FFT job in-process; `actord run` runs the daemon in the
foreground; `actorctl` (in `control/ctl.py`) talks to it over the control socket.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from .. import __version__
from .signals import SignalQueue

# Only the standard library and `signals` are imported above: `actord run` installs its
# handlers before anything else of ours is loaded (see `actord_main`).

# The demo lives with the concrete actors; actord/ never imports actors/ statically.
_DEMO = "actors.demo:run"


def _load(target: str) -> Callable[..., int]:
    module, _, attr = target.partition(":")
    return cast(Callable[..., int], getattr(importlib.import_module(module), attr))


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line on stderr (exit 2), pointing at --help."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def actord_main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # First of all: from here on a SIGTERM is queued for the main loop (a clean stop, exit
    # 0), never Python's default "die now", however early in the start it comes.
    signals = SignalQueue().install() if argv[:1] == ["run"] else None
    from ..runtime import logctx  # noqa: PLC0415 - after the handlers, see above
    from .sdnotify import Notifier  # noqa: PLC0415

    parser = _Parser(
        prog="actord",
        description="actord: an actor runtime daemon (threads that share nothing and talk "
        "through typed messages).",
    )
    parser.add_argument("--version", action="version", version=f"actord {__version__}")
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ...: for demo (default WARNING); for run and check-config "
        "the same as their own --log-level (daemon.log_level, default INFO)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run a log job and an FFT job in-process on sample inputs (no daemon needed)",
        description="Start the runtime in-process, write a sample log (with malformed lines) "
        "and a sample FFT stack into a directory, run a log job and an FFT job (a live "
        "progress line on a terminal, one line per change of a job's state otherwise), then "
        "print a summary and the output paths. The temporary directory is removed at the end "
        "unless --keep; a --dir is always kept.",
    )
    demo.add_argument(
        "--dir", help="where to write inputs and outputs (kept; default: a new temp dir, removed)"
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory with the inputs and outputs",
    )
    demo.add_argument("--lines", type=int, default=300_000, help="sample log lines (300000)")
    demo.add_argument("--chunks", type=int, default=16, help="FFT stack depth N (16)")
    demo.add_argument("--size", type=int, default=512, help="FFT chunk size H=W (512)")
    demo.add_argument("--parsers", type=int, default=2, help="parser pool size (2)")
    demo.add_argument("--fft-workers", type=int, default=2, help="FFT pool size (2)")
    demo.add_argument(
        "--executor",
        choices=("thread", "process"),
        default="process",
        help="where parser pool members parse: threads, or one worker process each (process)",
    )
    _add_run(commands)
    args = parser.parse_args(argv)
    if args.command == "check-config":
        logctx.configure(args.log_level or "WARNING")
        return _check_config(args)
    if args.command == "run":
        if signals is None:  # `actord --log-level X run`: options came first
            signals = SignalQueue().install()
        # `kill -USR1`: every thread's stack, named, in one log record (SIGUSR2: C level).
        from .dump import install  # noqa: PLC0415 - after the handlers

        install()
        notifier = Notifier()  # under systemd, `systemctl status` says so at once
        notifier.status("starting")
        notifier.close()
        return _run(args, signals)
    logctx.configure(args.log_level or "WARNING")
    if args.command is None:
        parser.print_help()
        return 2
    numbers = (args.lines, args.chunks, args.size, args.parsers, args.fft_workers)
    if min(numbers) < 1:
        parser.error("--lines, --chunks, --size, --parsers and --fft-workers must be positive")
    return _load(_DEMO)(
        directory=args.dir,
        keep=args.keep,
        lines=args.lines,
        chunks=args.chunks,
        size=args.size,
        parsers=args.parsers,
        fft_workers=args.fft_workers,
        executor=args.executor,
    )


# `actord run` flags: (flag, config key, type, help). Each overrides the config file's key.
_RUN_FLAGS: list[tuple[str, str, type, str]] = [
    ("--socket", "daemon.socket", str, "control socket path"),
    ("--state-dir", "daemon.state_dir", str, "journal and default roots live here"),
    ("--input-root", "paths.input_roots", str, "allowed root for job inputs (repeatable)"),
    ("--output-root", "paths.output_roots", str, "allowed root for job outputs (repeatable)"),
    ("--parsers", "parser.size", int, "parser pool size"),
    ("--parser-executor", "parser.executor", str, "thread, process or ray"),
    ("--fft-workers", "fft.size", int, "FFT pool size"),
    ("--fft-executor", "fft.executor", str, "thread or ray"),
    (
        "--fft-engine",
        "fft.engine",
        str,
        "scipy or numpy: the FFT library of the pool, local or on Ray (default: scipy when "
        "installed)",
    ),
    (
        "--ray-address",
        "ray.address",
        str,
        "the Ray cluster for the 'ray' executors: local (a private instance), auto, "
        "host:port or ray://host:port ('' = no Ray)",
    ),
    ("--ray-namespace", "ray.namespace", str, "Ray namespace of the daemon's Ray actors"),
    (
        "--shared-root",
        "ray.shared_roots",
        str,
        "a root every Ray node mounts at the same path: jobs under it move offsets, not "
        "data (repeatable)",
    ),
    ("--ray-cpus-per-worker", "ray.cpus_per_worker", float, "CPUs each Ray worker asks for"),
    ("--max-jobs", "daemon.max_jobs", int, "jobs running at once (the rest wait in order)"),
    ("--stuck-after", "daemon.stuck_after", float, "seconds on one message = wedged"),
    ("--mailbox-capacity", "mailbox_capacity", int, "default mailbox capacity"),
    ("--drain-deadline", "daemon.drain_deadline", float, "seconds SIGTERM lets jobs finish"),
    ("--metrics-address", "metrics.address", str, "host:port for /metrics ('' disables)"),
    ("--socket-group", "daemon.socket_group", str, "a group whose members may connect"),
    ("--max-connections", "daemon.max_connections", int, "open control connections allowed"),
    ("--idle-timeout", "daemon.idle_timeout", float, "seconds a silent connection stays open"),
    ("--frame-limit", "daemon.frame_limit", int, "bytes one control request may take"),
    ("--log-format", "daemon.log_format", str, "text (one line a record) or json"),
    (
        "--retention-days",
        "daemon.retention_days",
        float,
        "ended jobs older than this leave the journal (0: kept)",
    ),
    (
        "--retention-jobs",
        "daemon.retention_jobs",
        int,
        "ended jobs beyond the newest N leave the journal (0: kept)",
    ),
    ("--app", "daemon.app", str, "what the daemon hosts, as module:factory"),
]


def _add_run(commands: Any) -> None:
    from .config import DEFAULT_CONFIG_PATH  # noqa: PLC0415 - after the handlers

    run = commands.add_parser(
        "run",
        help="run the daemon in the foreground (as systemd runs it)",
        description="Run actord in the foreground: the job actors, the SQLite job journal and "
        "the control socket that actorctl talks to. Logs go to stderr. The config is --config, "
        f"else {DEFAULT_CONFIG_PATH} if it exists, else the built-in defaults; every flag "
        "below overrides its config key. SIGTERM/SIGINT drain and exit 0; SIGHUP reloads.",
    )
    _add_config_flags(run)
    check = commands.add_parser(
        "check-config",
        help="check the config (and what a start needs of this host) without starting",
        description="Load the config as `actord run` would (--config, else "
        f"{DEFAULT_CONFIG_PATH} if it exists, else the built-in defaults; the same flags "
        "override it), check what a start needs of this host (the socket group, the roots and "
        "the state directory, the socket path, a free metrics port), and print the effective "
        "config as TOML, each value with where it came from. Exit 0 if a start would go "
        "ahead, 2 if not (each problem on stderr, naming its key).",
    )
    _add_config_flags(check)


def _add_config_flags(run: argparse.ArgumentParser) -> None:
    from .config import DEFAULT_CONFIG_PATH  # noqa: PLC0415 - after the handlers

    run.add_argument("--config", help=f"TOML config file (default {DEFAULT_CONFIG_PATH})")
    run.add_argument(
        "--log-level",
        dest="run_log_level",
        metavar="LEVEL",
        help="DEBUG, INFO (default), WARNING, ... [daemon.log_level]",
    )
    for flag, key, kind, text in _RUN_FLAGS:
        repeat = key.endswith("_roots")
        run.add_argument(
            flag,
            dest=key,
            type=kind,
            action="append" if repeat else "store",
            metavar=key.rsplit(".", 1)[-1].upper().removesuffix("S")
            if repeat
            else key.rsplit(".", 1)[-1].upper(),
            help=f"{text} [{key}]",
        )


def _run(args: argparse.Namespace, signals: SignalQueue) -> int:
    from ..runtime import logctx  # noqa: PLC0415 - after the handlers
    from ..runtime.errors import ActordError  # noqa: PLC0415
    from .config import ConfigError  # noqa: PLC0415
    from .main import Daemon, exit_hard_if_stuck  # noqa: PLC0415 - only `run` needs it

    overrides = _overrides(args)
    logctx.configure("INFO")
    # A failed start says why in one line (the log has the details, if any) and exits 2 for
    # a bad config or flag, 1 for anything else.
    try:
        daemon = Daemon(args.config, overrides, signals=signals)
        code = daemon.run()
    except ConfigError as error:
        print(f"actord: {_named(str(error), args.config, overrides)}", file=sys.stderr)
        return exit_hard_if_stuck(2)
    except (OSError, ActordError) as error:
        print(f"actord: cannot start: {_reason(error)}", file=sys.stderr)
        return exit_hard_if_stuck(1)
    return exit_hard_if_stuck(code)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {}
    for _, key, _, _ in _RUN_FLAGS:
        value = getattr(args, key)
        if value is not None:
            overrides[key] = tuple(value) if isinstance(value, list) else value
    level = args.run_log_level or args.log_level  # `actord --log-level X run` as well
    if level:
        overrides["daemon.log_level"] = level
    return overrides


def _flags() -> dict[str, str]:
    return {key: flag for flag, key, _, _ in _RUN_FLAGS} | {"daemon.log_level": "--log-level"}


def _config_path(path: str | None) -> str | None:
    from .config import DEFAULT_CONFIG_PATH  # noqa: PLC0415 - after the handlers

    if path is None and DEFAULT_CONFIG_PATH.exists():
        return str(DEFAULT_CONFIG_PATH)
    return path


def _named(message: str, path: str | None, overrides: dict[str, object]) -> str:
    """A config error, and where the key it names got its value (the file, a flag)."""
    from .checks import key_of, origin  # noqa: PLC0415 - after the handlers

    key = key_of(message)
    if key is None:
        return message
    return f"{message} [{origin(key, _config_path(path), overrides, _flags())}]"


def _reason(error: BaseException) -> str:
    from .checks import describe_os_error  # noqa: PLC0415 - after the handlers

    return describe_os_error(error) if isinstance(error, OSError) else str(error)


def _check_config(args: argparse.Namespace) -> int:
    """`actord check-config`: 0 if a start would go ahead, 2 if not."""
    from ..control.client import Client, NotRunning, RemoteError  # noqa: PLC0415
    from .app import load_app  # noqa: PLC0415
    from .checks import Problem, host_problems, render  # noqa: PLC0415
    from .config import ConfigError, load_config  # noqa: PLC0415
    from .main import state_dir_in_use  # noqa: PLC0415

    overrides = _overrides(args)
    path = _config_path(args.config)
    try:
        unresolved = load_config(path, overrides)
        config = unresolved.resolved()
        load_app(config.daemon.app)
    except ConfigError as error:
        print(f"actord: {_named(str(error), path, overrides)}", file=sys.stderr)
        return 2
    running = None
    if state_dir_in_use(Path(config.daemon.state_dir)):
        # Its socket and metrics port are its own: a restart frees them.
        try:
            with Client(config.daemon.socket, timeout=5.0) as client:
                running = client.call("status")
        except (NotRunning, RemoteError, OSError):
            running = {}
    problems: list[Problem] = host_problems(config, running=running)
    if running is not None:
        problems.append(
            Problem(
                "daemon.state_dir",
                f"{config.daemon.state_dir} is in use by a running actord "
                f"(pid {running.get('pid', '?')}): stop it before another one starts on it",
                fatal=False,
            )
        )
    print(render(config, path, overrides, _flags(), unresolved), end="")
    for problem in problems:
        kind = "error" if problem.fatal else "warning"
        print(f"actord: {kind}: {_named(str(problem), path, overrides)}", file=sys.stderr)
    bad = sum(problem.fatal for problem in problems)
    if bad:
        print(
            f"actord: a start would fail here ({bad} error{'s' * (bad > 1)})",
            file=sys.stderr,
        )
        return 2
    return 0


def actorctl_main(argv: Sequence[str] | None = None) -> int:
    from ..control.ctl import main  # noqa: PLC0415 - keeps `actord` imports small

    return main(argv)


if __name__ == "__main__":
    raise SystemExit(actord_main())
