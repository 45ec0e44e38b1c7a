"""Command-line entry points: `actord` (the daemon) and `actorctl` (its client).

They start small: `actord demo` runs a pipeline in-process; `actord run` and the `actorctl`
commands arrive with the daemon and control-plane work.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import cast

from . import __version__
from .logctx import LOG_FORMAT

# The demo lives with the concrete actors; actord/ never imports actors/ statically.
_DEMO = "actors.demo:run"


def _load(target: str) -> Callable[..., int]:
    module, _, attr = target.partition(":")
    return cast(Callable[..., int], getattr(importlib.import_module(module), attr))


def actord_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="actord",
        description="actord: an actor runtime daemon (threads that share nothing and talk "
        "through typed messages).",
    )
    parser.add_argument("--version", action="version", version=f"actord {__version__}")
    parser.add_argument(
        "--log-level", default="WARNING", help="logging level for the runtime (default WARNING)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run a log job and an FFT job in-process on sample inputs (no daemon needed)",
        description="Start the runtime in-process, write a sample log (with malformed lines) "
        "and a sample FFT stack into a directory, run a log job and an FFT job with a live "
        "progress line, then print a summary and the output paths.",
    )
    demo.add_argument("--dir", help="where to write inputs and outputs (default: a new temp dir)")
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    if args.command is None:
        parser.print_help()
        return 2
    numbers = (args.lines, args.chunks, args.size, args.parsers, args.fft_workers)
    if min(numbers) < 1:
        parser.error("--lines, --chunks, --size, --parsers and --fft-workers must be positive")
    return _load(_DEMO)(
        directory=args.dir,
        lines=args.lines,
        chunks=args.chunks,
        size=args.size,
        parsers=args.parsers,
        fft_workers=args.fft_workers,
        executor=args.executor,
    )


def actorctl_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="actorctl",
        description="actorctl: control a running actord over its Unix socket. The control "
        "socket arrives with the daemon work; for now only --version is available.",
    )
    parser.add_argument("--version", action="version", version=f"actorctl {__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(actord_main())
