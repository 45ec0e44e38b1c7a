"""Logging context: every record emitted on an actor's thread names the actor and the
correlation id of the message being handled (the seed's thread-local storage).

`install()` wraps the process's log record factory once, so the fields exist on every record
from every logger, whichever handler formats it; outside an actor they are "-". A record made
without that factory (before `install()`, or by a factory set after it) lacks them, and a plain
``Formatter(LOG_FORMAT)`` fails on it; `formatter()` does not, and `configure()` sets up the
root logger with it (use it instead of ``logging.basicConfig(format=LOG_FORMAT)``).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any, Final, Protocol, TextIO

__all__ = [
    "LOG_FORMAT",
    "JsonFormatter",
    "bind",
    "configure",
    "current_actor",
    "formatter",
    "install",
    "set_outside",
]

LOG_FORMAT: Final = (
    "%(asctime)s %(levelname)s %(name)s [actor=%(actor)s cid=%(correlation_id)s] %(message)s"
)


class _HasContext(Protocol):
    @property
    def member(self) -> str: ...

    @property
    def correlation_id(self) -> str | None: ...


# One slot per thread: the actor cell running on it, if any.
_local = threading.local()
# _install_lock guards _installed and _handler.
_install_lock = threading.Lock()
_installed = False
_handler: logging.Handler | None = None  # the root handler configure() added last
_DEFAULTS: Final = {"actor": "-", "correlation_id": "-"}
# What `actor` says on a thread that runs no actor ("daemon" in `actord run`): one str,
# replaced whole (set_outside), read by every record's factory without a lock.
_outside = "-"


def set_outside(name: str) -> None:
    """Name the process's threads that run no actor, in their records (``actor=daemon``)."""
    global _outside  # noqa: PLW0603 - a process-wide label, one str replaced whole
    _outside = name


def bind(cell: _HasContext | None) -> None:
    """Declare that the calling thread runs `cell` (None to unbind)."""
    _local.cell = cell


def current_actor() -> str | None:
    """The member name of the actor running on this thread, or None."""
    cell: _HasContext | None = getattr(_local, "cell", None)
    return None if cell is None else cell.member


def install() -> None:
    """Add `actor` and `correlation_id` to every LogRecord (idempotent)."""
    global _installed  # noqa: PLW0603 - a process-wide, install-once switch
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            cell: _HasContext | None = getattr(_local, "cell", None)
            if cell is None:
                record.actor = _outside
                record.correlation_id = "-"
            else:
                record.actor = cell.member
                record.correlation_id = cell.correlation_id or "-"
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


def formatter() -> logging.Formatter:
    """A formatter for LOG_FORMAT that never fails for want of the context fields: a record
    without them (made before `install()`) shows "-", as one from outside an actor does."""
    return logging.Formatter(LOG_FORMAT, defaults=_DEFAULTS)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (what journald and log shippers read best):
    ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``actor``, ``correlation_id``,
    ``message`` (a multi-line message stays one record), and ``exception`` if any."""

    def format(self, record: logging.LogRecord) -> str:
        moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        data: dict[str, Any] = {
            "time": f"{moment}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "actor": getattr(record, "actor", _DEFAULTS["actor"]),
            "correlation_id": getattr(record, "correlation_id", _DEFAULTS["correlation_id"]),
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure(level: str | int, stream: TextIO | None = None, *, json_lines: bool = False) -> None:
    """Log records of `level` and above to `stream` (stderr if None) in LOG_FORMAT (or one
    JSON object per record: `json_lines`), with the context fields installed. Idempotent: a
    second call replaces the handler the first one added to the root logger (and only that
    one), so nothing is logged twice."""
    global _handler  # noqa: PLW0603 - the one root handler this module owns
    install()
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if json_lines else formatter())
    root = logging.getLogger()
    with _install_lock:
        if _handler is not None:
            root.removeHandler(_handler)
        root.addHandler(handler)
        _handler = handler
    # Names as the command line gives them ("info") as well as logging's own ("INFO").
    root.setLevel(level.upper() if isinstance(level, str) else level)
