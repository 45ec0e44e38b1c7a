"""systemd integration without libsystemd: notify messages, the watchdog, socket activation.

`Notifier` sends datagrams to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract
socket); without it every call is a no-op, so the daemon runs the same outside systemd.
`watchdog_interval` reads ``$WATCHDOG_USEC`` (honouring ``$WATCHDOG_PID``) and returns the
longest period at which to ping: half the timeout (the daemon may ping more often).
`listen_fds` takes sockets passed by socket activation (``$LISTEN_FDS``, ``$LISTEN_PID``,
``$LISTEN_FDNAMES``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["LISTEN_FDS_START", "Notifier", "listen_fds", "watchdog_interval"]

_log = logging.getLogger("actord.sdnotify")

LISTEN_FDS_START = 3


class Notifier:
    """Sends sd_notify messages; a no-op when not run by systemd with Type=notify."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if address.startswith("@"):
            self._address = b"\0" + address[1:].encode()  # Linux abstract namespace
        elif address.startswith("/"):
            self._address = address
        self._socket: socket.socket | None = None
        self._failed = False  # a send failed already: later failures are logged at DEBUG
        if self._address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines (``notify(READY=1, STATUS="...")``); False if disabled."""
        if self._socket is None or self._address is None:
            return False
        lines = [f"{key}={value}" for key, value in fields.items()]
        if any("\n" in line for line in lines):
            raise ValueError("sd_notify fields may not contain newlines")
        try:
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as error:
            # The manager went away (or never listened): the daemon must go on regardless.
            level = logging.DEBUG if self._failed else logging.WARNING
            _log.log(level, "sd_notify to %s failed: %s", self._address, error)
            self._failed = True
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify(READY=1, **({"STATUS": _one_line(status)} if status else {}))

    def status(self, text: str) -> bool:
        return self.notify(STATUS=_one_line(text))

    def stopping(self) -> bool:
        return self.notify(STOPPING=1)

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC, as systemd 253+ expects (harmless on 252)."""
        return self.notify(
            RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        )

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _one_line(text: str) -> str:
    # STATUS= is free text (it may quote a config error): a newline would end the field.
    return " ".join(text.split())


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """The most seconds between two watchdog pings (half of WATCHDOG_USEC), or None without a
    watchdog."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None  # meant for another process
    return int(usec) / 1e6 / 2


def listen_fds(env: Mapping[str, str] | None = None, pid: int | None = None) -> dict[str, int]:
    """Sockets passed by socket activation, by name (``fd3``, ... when unnamed)."""
    env = os.environ if env is None else env
    count = env.get("LISTEN_FDS", "")
    if not count.isdigit() or env.get("LISTEN_PID", "") != str(os.getpid() if pid is None else pid):
        return {}
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    fds = {}
    for offset in range(int(count)):
        fd = LISTEN_FDS_START + offset
        name = names[offset] if offset < len(names) and names[offset] else f"fd{fd}"
        fds[name] = fd
    return fds
