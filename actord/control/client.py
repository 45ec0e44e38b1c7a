"""The control client: msgpack-RPC calls to a running actord over its Unix socket.

``Client(path).call("status")`` returns the result or raises `RemoteError` with the daemon's
stable error code; `stream` yields the notifications a call sends (``watch``) before its
result. A daemon that is not there raises `NotRunning`.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .protocol import (
    DEFAULT_FRAME_LIMIT,
    FrameDecoder,
    Notification,
    ProtocolError,
    Response,
    encode_request,
)

__all__ = [
    "REPLY_LIMIT",
    "SYSTEM_SOCKET",
    "Client",
    "NotRunning",
    "RemoteError",
    "answer",
    "default_socket",
    "refusal",
]

SYSTEM_SOCKET = "/run/actord.sock"
REPLY_LIMIT = DEFAULT_FRAME_LIMIT * 64  # a client's frame limit: replies may be larger


def answer(message: Response) -> Any:
    """The result a response carries, or its error raised as `RemoteError` (both clients)."""
    if message.error is not None:
        raise RemoteError(message.error["code"], str(message.error.get("message", "")))
    return message.result


def refusal(message: Response | Notification) -> RemoteError | None:
    """The error of a server's refusal of the connection (msgid 0), if `message` is one."""
    if isinstance(message, Response) and message.msgid == 0 and message.error:
        return RemoteError(message.error["code"], str(message.error.get("message", "")))
    return None


class RemoteError(Exception):
    """The daemon answered with an error ``{code, message}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class NotRunning(ConnectionError):
    """Nothing is listening on the socket (no file, or a stale one)."""


def default_socket(env: dict[str, str] | None = None) -> str:
    """``$ACTORD_SOCKET``, else where a daemon run by this user puts it by default, else the
    system service's socket if only that one exists."""
    from ..daemon.config import Config  # noqa: PLC0415 - only for the default path

    env = dict(os.environ) if env is None else env
    if env.get("ACTORD_SOCKET"):
        return env["ACTORD_SOCKET"]
    own = Config().resolved(env).daemon.socket
    if not os.path.exists(own) and os.path.exists(SYSTEM_SOCKET):
        return SYSTEM_SOCKET  # the system service's (systemd/actord.socket)
    return own


class Client:
    """One connection; calls are made one at a time (not thread-safe)."""

    def __init__(self, path: str, *, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._sock.settimeout(timeout)
        try:
            self._connect(path, timeout)
        except (FileNotFoundError, ConnectionRefusedError) as error:
            self._sock.close()
            raise NotRunning(f"actord is not running at {path} ({error.strerror})") from None
        except OSError:
            self._sock.close()
            raise
        self._decoder = FrameDecoder(REPLY_LIMIT)
        self._pending: list[Response | Notification] = []

    def _connect(self, path: str, timeout: float) -> None:
        # A Unix socket whose listen queue is full refuses at once (EAGAIN) rather than
        # wait: a daemon busy accepting a flood of connections. Try again until `timeout`.
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            try:
                self._sock.connect(path)
            except BlockingIOError:
                if time.monotonic() + pause > deadline:
                    raise
                threading.Event().wait(pause)  # nothing to wait on: the queue has no event
                pause = min(pause * 2, 0.2)
                continue
            return

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        return self.stream(method, *params, on_notification=None, timeout=timeout)

    def stream(
        self,
        method: str,
        *params: Any,
        on_notification: Callable[[str, tuple[Any, ...]], None] | None,
        timeout: float | None = None,
    ) -> Any:
        """Call `method`; each notification before the response goes to `on_notification`.
        `timeout` bounds each wait for data (None: the client's)."""
        msgid = next(self._ids)
        self._sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            self._sock.sendall(encode_request(msgid, method, params))
        except (BrokenPipeError, ConnectionResetError) as error:
            # A server that refuses a peer (forbidden, busy) answers at once and closes
            # without reading, so the write can fail after the answer came: the answer,
            # still in our receive buffer, says why; the broken pipe only says that it did.
            refusal = self._refusal()
            if refusal is None:
                raise
            raise refusal from error
        while True:
            message = self._next()
            if isinstance(message, Notification):
                if on_notification is not None:
                    on_notification(message.method, message.params)
                continue
            if message.msgid not in (msgid, 0):  # 0: the server refused the connection
                continue
            return answer(message)

    def closed_within(self, timeout: float) -> bool:
        """Wait up to `timeout` for the daemon to close this connection (as it does when it
        stops); True once it has."""
        self._sock.settimeout(timeout)
        try:
            while self._sock.recv(1 << 16):
                pass  # a late notification: nothing for us
        except TimeoutError:
            return False
        except OSError:
            return True  # reset: gone as well
        return True

    def _refusal(self) -> RemoteError | None:
        """After a failed write: the error the server sent before it closed, if it sent one."""
        while True:
            try:
                message = self._next()
            except (OSError, ProtocolError):
                return None  # closed (or reset) with no whole frame: nothing to tell
            refused = refusal(message)
            if refused is not None:
                return refused

    def _next(self) -> Response | Notification:
        while not self._pending:
            data = self._sock.recv(1 << 16)
            if not data:
                raise ConnectionResetError("actord closed the connection")
            self._decoder.feed(data)
            for message in self._decoder:
                if isinstance(message, Response | Notification):
                    self._pending.append(message)
        return self._pending.pop(0)
