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
_DEMO = "actors.demo:main"


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
        "demo", help="run a sample pipeline in-process and print a summary (no daemon needed)"
    )
    demo.add_argument("--lines", type=int, default=200_000, help="log lines to generate")
    demo.add_argument("--block", type=int, default=1000, help="lines per message to the parsers")
    demo.add_argument("--parsers", type=int, default=2, help="parser pool size")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    if args.command is None:
        parser.print_help()
        return 2
    if args.lines < 1 or args.block < 1 or args.parsers < 1:
        parser.error("--lines, --block and --parsers must be positive")
    return _load(_DEMO)(lines=args.lines, block=args.block, parsers=args.parsers)


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
