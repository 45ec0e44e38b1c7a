"""`kill -USR1 <pid>`: what a daemon that seems stuck is doing, as one log record.

The record has a header (the time, the pid, how many threads) and each thread's stack under
its name, with the actor it runs when it runs one (the runtime's statistics map native
thread ids to actors). One record, so that journald keeps it as one entry, not one per line.

The handler runs on the main thread as soon as it runs Python again (a main loop waiting in
`select` or on a lock is woken for it). For an interpreter wedged in C, SIGUSR2 keeps
`faulthandler`'s dump, written to stderr at C level, line by line.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Final

from ..runtime.stats import ActorStats

__all__ = ["format_dump", "install", "watch_actors"]

_log: Final = logging.getLogger("actord.dump")
# Where the actors come from: set once the daemon's system exists (main thread), read by the
# handler (main thread too).
_actors: Callable[[], Iterable[ActorStats]] | None = None


def watch_actors(stats: Callable[[], Iterable[ActorStats]] | None) -> None:
    """Name threads by the actors `stats` says they run (None: no actors to name)."""
    global _actors  # noqa: PLW0603 - one process, one signal handler
    _actors = stats


def install() -> None:
    """Main thread: SIGUSR1 logs the dump; SIGUSR2 is faulthandler's own, at C level."""
    signal.signal(signal.SIGUSR1, _handle)
    faulthandler.register(signal.SIGUSR2, all_threads=True)


_dumping = False  # a dump is being written (main thread): a signal during it is not nested


def _handle(signum: int, frame: FrameType | None) -> None:
    global _dumping  # noqa: PLW0603 - the handler's own re-entry flag
    if _dumping:  # a burst of SIGUSR1: the dump under way answers it
        return
    _dumping = True
    try:
        _log.warning("%s", format_dump(_actors() if _actors is not None else ()))
    finally:
        _dumping = False


def format_dump(
    actors: Iterable[ActorStats],
    frames: dict[int, FrameType] | None = None,
    now: float | None = None,
) -> str:
    """Every thread's stack, named, under a header; `frames` by thread ident (default: this
    process's, now)."""
    frames = sys._current_frames() if frames is None else frames
    by_native: dict[int, list[str]] = {}
    for stats in actors:
        if stats.native_thread_id:  # 0: not started yet
            by_native.setdefault(stats.native_thread_id, []).append(stats.name)
    threads = {thread.ident: thread for thread in threading.enumerate()}
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))
    lines = [f"thread dump at {moment}, pid {os.getpid()}, {len(frames)} threads"]
    for ident, frame in sorted(frames.items(), key=lambda item: _name(threads.get(item[0]))):
        thread = threads.get(ident)
        native = getattr(thread, "native_id", None)
        actor = by_native.get(native) if native is not None else None
        what = f" (actor {', '.join(actor)})" if actor else ""
        lines.append("")
        lines.append(f"{_name(thread)}{what}, native id {native if native is not None else '?'}:")
        lines += [line.rstrip() for line in traceback.format_stack(frame)]
    return "\n".join(lines)


def _name(thread: threading.Thread | None) -> str:
    return "?" if thread is None else thread.name
