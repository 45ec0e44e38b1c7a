"""The metrics endpoint's HTTP server: one selector thread for every connection, and a few
worker threads that only render responses.

No thread ever waits on a client. The selector thread accepts, reads each request (whole
within `read_timeout` of the connect) and writes each response (within `write_timeout`)
without blocking; a worker renders a request it is handed and gives the bytes back. So an
idle connection costs a descriptor and a few bytes, never a thread.

At most `max_connections` are open at once. Past the cap, the oldest connection that has
sent nothing yet is answered 503 and closed to make room (a flood of idle connections cannot
shut scrapes out); when every slot holds a request that came in, the newcomer is answered
503 and closed at once. Out of descriptors (EMFILE, ENFILE), the loop stops accepting for a
moment, logged once per episode, and goes on: the listener never dies.

One request per connection (``Connection: close``), which is what Prometheus needs. GET and
HEAD only (HEAD: the status and headers GET would have, no body); any other method is
answered 405 with ``Allow: GET, HEAD``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

__all__ = ["ScrapeServer", "WsgiApp"]

_log: Final = logging.getLogger("actord.metrics")
_REQUEST_LIMIT: Final = 16384  # bytes of request line and headers: a scrape sends ~200
_CHUNK: Final = 65536
_WORKERS: Final = 2  # render threads: a scrape is a few ms of CPU; two keep one slow one apart
# Out of descriptors: accepting pauses this long at first, doubling up to the last.
_BACKOFF: Final = (0.05, 1.0)
_WAKE: Final = "wake"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _response(status: str, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


_BUSY: Final = _response(
    "503 Service Unavailable",
    b"too many connections to the metrics endpoint; try again\n",
    [("Content-Type", "text/plain; charset=utf-8"), ("Retry-After", "1")],
)
_TOO_LARGE: Final = _response(
    "431 Request Header Fields Too Large", b"request too large\n", [("Content-Type", "text/plain")]
)
_BAD: Final = _response("400 Bad Request", b"bad request\n", [("Content-Type", "text/plain")])
_METHODS: Final = ("GET", "HEAD")
_NOT_ALLOWED: Final = _response(
    "405 Method Not Allowed",
    b"only GET and HEAD\n",
    [("Content-Type", "text/plain"), ("Allow", ", ".join(_METHODS))],
)


class _Conn:
    """One client connection; touched only by the selector thread, except `request` and
    `out`, which a worker reads and writes while the connection is out of the selector."""

    __slots__ = ("deadline", "inbound", "out", "request", "sock", "state")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.inbound = bytearray()  # what the client sent so far
        self.request = b""  # its request line and headers, once complete
        self.out = memoryview(b"")  # what is left to write
        self.state = "reading"  # reading | rendering | writing


class ScrapeServer:
    """Serve `app` (a WSGI app: prometheus_client's) on a listening TCP socket."""

    def __init__(
        self,
        listener: socket.socket,
        app: WsgiApp,
        *,
        max_connections: int = 128,
        read_timeout: float = 5.0,
        write_timeout: float = 10.0,
    ) -> None:
        self._listener = listener
        self._app = app
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # The selector thread's own: every open connection, oldest first.
        self._open: dict[socket.socket, _Conn] = {}
        self._paused_until = 0.0  # out of descriptors: no accept before this (monotonic)
        self._backoff = _BACKOFF[0]
        self._refused = 0  # connections answered 503 in this episode of the cap
        # _lock guards _rendered (connections whose response a worker has built) and
        # _closing; the selector thread takes them when the wake-up pipe says so.
        self._lock = threading.Lock()
        self._rendered: list[_Conn] = []
        self._closing = False
        self._jobs: queue.SimpleQueue[_Conn | None] = queue.SimpleQueue()
        self._workers = [
            threading.Thread(target=self._work, name=f"actord-metrics-render-{i}", daemon=False)
            for i in range(_WORKERS)
        ]

    @property
    def connections(self) -> int:
        return len(self._open)  # one read of a dict's size

    # -- the selector thread ------------------------------------------------------------------

    def start_workers(self) -> None:
        for worker in self._workers:
            worker.start()

    def serve(self) -> None:
        """The loop (its own thread, after `start_workers`), until `close`."""
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        try:
            while True:
                for key, events in self._selector.select(self._timeout()):
                    if key.data is None:
                        self._accept()
                    elif key.data == _WAKE:
                        if self._woken():
                            return
                    elif events & selectors.EVENT_READ:
                        self._read(key.data)
                    else:
                        self._write(key.data)
                self._expire()
        finally:
            for conn in list(self._open.values()):
                self._drop(conn)
            self._selector.close()

    def _timeout(self) -> float | None:
        deadlines = [c.deadline for c in self._open.values() if c.state != "rendering"]
        if self._paused_until:
            deadlines.append(self._paused_until)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return  # the peer gave up, or another accept took it
        except (ConnectionAbortedError, InterruptedError):
            return  # that one client's trouble
        except OSError as error:
            self._pause(error)  # EMFILE, ENFILE, ...: never the end of the listener
            return
        if self._backoff != _BACKOFF[0]:
            _log.warning("metrics: accepting connections again")
            self._backoff = _BACKOFF[0]
        sock.setblocking(False)
        if len(self._open) >= self.max_connections:
            if not self._refused:
                _log.warning(
                    "metrics: %d connections open (metrics.max_connections): the oldest idle "
                    "ones and the newcomers past it are answered 503",
                    len(self._open),
                )
            self._refused += 1
            if not self._evict_idle():
                self._refuse(sock)
                return
        elif self._refused:
            _log.warning("metrics: below the cap again (%d answered 503)", self._refused)
            self._refused = 0
        conn = self._open[sock] = _Conn(sock, time.monotonic() + self.read_timeout)
        self._selector.register(sock, selectors.EVENT_READ, conn)

    def _pause(self, error: OSError) -> None:
        # Out of descriptors: the listener stays readable, so stop watching it for a while
        # rather than spin. Logged once per episode (the first pause after a good accept).
        if self._backoff == _BACKOFF[0]:
            _log.warning(
                "metrics: cannot accept (%s; %d connections open): pausing, scrapes wait",
                error,
                len(self._open),
            )
        self._selector.unregister(self._listener)
        self._paused_until = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, _BACKOFF[1])

    def _evict_idle(self) -> bool:
        # The oldest connection that has sent nothing makes room for the newcomer. What a
        # candidate sent that this loop has not read yet is read first: it is not idle then.
        for conn in list(self._open.values()):
            if conn.state == "reading" and not conn.inbound:
                self._read(conn)
                if conn.sock not in self._open:
                    return True  # it had closed: its slot is free
                if not conn.inbound:
                    self._forget(conn)
                    self._refuse(conn.sock)
                    return True
        return False

    @staticmethod
    def _refuse(sock: socket.socket) -> None:
        try:
            sock.send(_BUSY, socket.MSG_DONTWAIT)
            # What it sent is read and dropped: closing with unread data would reset the
            # connection, and the client might lose the 503 with it.
            sock.recv(_CHUNK, socket.MSG_DONTWAIT)
        except OSError as error:
            _log.debug("metrics: a refused client: %s", error)
        sock.close()

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError as error:
            _log.debug("metrics: a client's connection failed: %s", error)
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        conn.inbound += data
        end = conn.inbound.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.inbound) > _REQUEST_LIMIT:
                self._reply(conn, _TOO_LARGE)
            return
        conn.request = bytes(conn.inbound[:end])
        conn.state = "rendering"
        self._selector.unregister(conn.sock)
        self._jobs.put(conn)

    def _reply(self, conn: _Conn, data: bytes | memoryview) -> None:
        conn.out = memoryview(data)
        conn.state = "writing"
        conn.deadline = time.monotonic() + self.write_timeout
        try:
            self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        except KeyError:
            self._selector.register(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            return
        except OSError as error:
            _log.debug("metrics: a client went away before its answer: %s", error)
            self._drop(conn)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self._drop(conn)

    def _woken(self) -> bool:
        # Drain the pipe; hand rendered responses to writing. True: close now.
        with contextlib.suppress(BlockingIOError):  # drained
            while os.read(self._wake_r, 4096):
                pass
        with self._lock:
            rendered, self._rendered = self._rendered, []
            closing = self._closing
        if closing:
            return True
        for conn in rendered:
            if conn.sock in self._open:
                self._reply(conn, conn.out)
        return False

    def _expire(self) -> None:
        now = time.monotonic()
        if self._paused_until and now >= self._paused_until:
            self._paused_until = 0.0
            self._selector.register(self._listener, selectors.EVENT_READ, None)
        for conn in [c for c in self._open.values() if c.state != "rendering"]:
            if now >= conn.deadline:
                _log.debug("metrics: a client took too long (%s): closed", conn.state)
                self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        self._forget(conn)
        conn.sock.close()

    def _forget(self, conn: _Conn) -> None:
        if conn.state != "rendering":
            with contextlib.suppress(KeyError):  # not in the selector
                self._selector.unregister(conn.sock)
        self._open.pop(conn.sock, None)

    # -- the render workers ---------------------------------------------------------------

    def _work(self) -> None:
        while True:
            conn = self._jobs.get()  # woken by a request, or by None from close
            if conn is None:
                return
            conn.out = memoryview(self._render(conn.request))
            with self._lock:
                if self._closing:
                    continue  # the selector thread is gone: close() closes the socket
                self._rendered.append(conn)
            self._wake()

    def _render(self, request: bytes) -> bytes:
        try:
            line, *header_lines = request.decode("latin-1").split("\r\n")
            method, target, _ = line.split(" ", 2)
        except ValueError:
            return _BAD
        if method not in _METHODS:
            return _NOT_ALLOWED
        path, _, query = target.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "GET",  # HEAD: rendered as GET, and the body left off below
            "PATH_INFO": path,
            "QUERY_STRING": query,
        }
        for header in header_lines:
            name, sep, value = header.partition(":")
            if sep:
                environ["HTTP_" + name.strip().upper().replace("-", "_")] = value.strip()
        answer: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
            answer[:] = [status, headers]

        body = b"".join(self._app(environ, start_response))
        response = _response(answer[0], body, answer[1])
        return response[: len(response) - len(body)] if method == "HEAD" else response

    def _wake(self) -> None:
        # A full pipe: the selector thread has wake-ups waiting already.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    # -- any thread ---------------------------------------------------------------------------

    def close(self, thread: threading.Thread, timeout: float) -> None:
        """Stop accepting, close every connection, join the threads within `timeout`. Our
        listening descriptor is closed (an activated socket stays open in systemd)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closing = True
        self._wake()
        thread.join(timeout)
        for _ in self._workers:
            self._jobs.put(None)
        for worker in self._workers:
            if worker.is_alive():
                worker.join(max(0.0, deadline - time.monotonic()))
        for conn in list(self._open.values()):  # those left rendering when the loop ended
            conn.sock.close()
        self._listener.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
