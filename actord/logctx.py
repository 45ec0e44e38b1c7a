"""Logging context: every record emitted on an actor's thread names the actor and the
correlation id of the message being handled (the seed's thread-local storage).

`install()` wraps the process's log record factory once, so the fields exist on every record
from every logger, whichever handler formats it; outside an actor they are "-".
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final, Protocol

__all__ = ["LOG_FORMAT", "bind", "current_actor", "install"]

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
# _install_lock guards _installed.
_install_lock = threading.Lock()
_installed = False


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
                record.actor = "-"
                record.correlation_id = "-"
            else:
                record.actor = cell.member
                record.correlation_id = cell.correlation_id or "-"
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
