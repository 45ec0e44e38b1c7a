"""The control socket server: msgpack-RPC over a Unix stream socket.

One named thread accepts; one named thread serves each connection (at most
`max_connections`: at the cap, the connection idle the longest is closed to make room, and
when every one is in a call the newcomer gets a ``busy`` error and is closed). Out of
descriptors, the accept loop pauses and goes on. Every peer is
checked with SO_PEERCRED before anything runs: root, the daemon's own uid and members of a
configured group are allowed, anyone else gets ``forbidden``. A connection that breaks the
framing gets an error and is closed; a silent one is closed after `idle_timeout`. The server
never interprets methods itself: it hands each request to `handler` (the daemon turns them into
messages to actors).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import logging
import os
import pwd
import select
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..daemon.config import ConfigError
from ..runtime.errors import ActordError, ErrorCode, Refused
from .protocol import (
    DEFAULT_FRAME_LIMIT,
    FrameDecoder,
    ProtocolError,
    Request,
    encode_notification,
    encode_response,
)

__all__ = ["Call", "ControlServer", "Handler", "Hangup", "Peer", "bound_address"]

_log: Final = logging.getLogger("actord.control")
_CRED: Final = struct.Struct("3i")
# Accept failing (out of descriptors): the first pause, doubled up to the last, in seconds.
_BACKOFF: Final = (0.05, 1.0)
_BUMPED: Final = encode_response(
    0,
    {
        "code": ErrorCode.BUSY.value,
        "message": "closed: idle while the connections reached daemon.max_connections",
    },
    None,
)


class _Conn:
    """The server's record of one connection (its thread writes `idle_since` and `used`;
    the accept thread reads them under the server's lock to pick one to close)."""

    __slots__ = ("idle_since", "thread", "used")

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread
        self.idle_since = 0.0  # monotonic time it began waiting for a request; 0 in a call
        self.used = False  # it has sent a request


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int


class Call:
    """One request as a handler sees it: the method, its params, who asked, and a way to
    stream notifications (``[2, method, params]``) back before the response.

    Made once per request on the connection's thread and never shared, so a plain slotted
    class (cheaper to build than a frozen dataclass on this hot path).
    """

    __slots__ = ("_conn", "_send", "hangup", "method", "params", "peer", "request")

    def __init__(
        self,
        request: Request,
        peer: Peer,
        send: Callable[[bytes], None],
        conn: socket.socket | None = None,
    ) -> None:
        self.request = request
        self.method = request.method
        self.params = request.params
        self.peer = peer
        self._send = send
        self._conn = conn
        self.hangup = False  # set by the server: close the connection after the answer

    def unread(self) -> int:
        """Bytes sent to the client that it has not read yet (0 if not known)."""
        if self._conn is None:
            return 0
        try:
            queued = fcntl.ioctl(self._conn.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return 0
        return int(struct.unpack("i", queued)[0])

    def peer_gone(self) -> bool:
        """True once the client has closed its end (for a long call such as ``watch``, which
        would otherwise notice only at its next notification)."""
        if self._conn is None:
            return False
        try:
            data = self._conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False  # connected and quiet
        except OSError:
            return True
        return data == b""

    def notify(self, method: str, params: list[Any] | tuple[Any, ...]) -> None:
        """Send a notification now (raises OSError once the client has gone)."""
        self._send(encode_notification(method, params))


Handler = Callable[[Call], Any]


class Hangup(Refused):
    """Raised by a handler: the request is answered with this error, then the connection is
    closed (a ``watch`` whose client stopped reading)."""


def _error(msgid: int, code: ErrorCode, message: str) -> bytes:
    return encode_response(msgid, {"code": code.value, "message": message}, None)


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1e6))


def _listening(path: str) -> bool:
    # A live server answers a connect; a stale socket file from a dead one refuses it.
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _peer(conn: socket.socket) -> Peer:
    pid, uid, gid = _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    return Peer(pid, uid, gid)


def bound_address(sock: socket.socket) -> str:
    """Where a socket is bound, as people write it: a path, ``@name`` for an abstract Unix
    socket, ``host:port``; "" if it is not bound."""
    name = sock.getsockname()
    if isinstance(name, bytes):  # Linux's abstract namespace: a leading NUL
        return "@" + name[1:].decode(errors="replace")
    if isinstance(name, str):
        return name
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ControlServer:
    """Serve `handler` on a Unix socket at `path` (or on an inherited listening socket: then
    `path` is where that socket really is, whatever the config said)."""

    def __init__(
        self,
        path: str,
        handler: Handler,
        *,
        group: str = "",
        max_connections: int = 64,
        frame_limit: int = DEFAULT_FRAME_LIMIT,
        idle_timeout: float = 60.0,
        listener: socket.socket | None = None,
    ) -> None:
        # An activated socket (systemd's .socket unit) is wherever the manager bound it: the
        # operator is told that path, not the configured one the daemon would have bound.
        self.path = path if listener is None else bound_address(listener) or path
        self.handler = handler
        self.frame_limit = frame_limit
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._group_gid, self._group_members = self._group(group)
        self._listener = listener
        self._owns_path = listener is None
        # _lock guards _connections (each open connection: its thread, and since when it
        # waits for a request), _full (the last admission found the cap reached) and
        # _stopping.
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, _Conn] = {}
        self._full = False
        self._stopping = False
        self._accept_thread: threading.Thread | None = None
        self._wake = os.pipe()  # written once by close_listener: ends the accept loop
        self._closing = threading.Event()  # set with it: ends a pause of the accept loop

    @staticmethod
    def _group(name: str) -> tuple[int | None, frozenset[str]]:
        if not name:
            return None, frozenset()
        try:
            entry = grp.getgrnam(name)
        except KeyError:
            raise ConfigError(f"daemon.socket_group: no group named {name!r}") from None
        return entry.gr_gid, frozenset(entry.gr_mem)

    @property
    def connections(self) -> int:
        return len(self._connections)  # one read of a dict's size: no lock needed

    def start(self) -> None:
        """Bind (socket 0660 in a directory only we can write) and start accepting."""
        if self._listener is None:
            directory = Path(self.path).parent
            directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            _check_private(directory)
            if _listening(self.path):
                raise ConfigError(
                    f"daemon.socket: another server (another actord?) is listening on "
                    f"{self.path}: choose another path (--socket PATH, or daemon.socket)"
                )
            Path(self.path).unlink(missing_ok=True)  # a stale socket from a previous run
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            old = os.umask(0o117)  # the socket file is created 0660: no window with more
            try:
                listener.bind(self.path)
            finally:
                os.umask(old)
            if self._group_gid is not None:  # the group may reach the socket, not write the dir
                os.chown(directory, -1, self._group_gid)
                os.chown(self.path, -1, self._group_gid)
            listener.listen(socket.SOMAXCONN)  # a flood waits in the kernel's queue, not in us
            self._listener = listener
        assert self._listener is not None
        self._listener.setblocking(False)  # select() says when; accept() must never block
        self._accept_thread = threading.Thread(
            target=self._accept, name="actord-control-accept", daemon=False
        )
        self._accept_thread.start()

    def allowed(self, peer: Peer) -> bool:
        if peer.uid in (0, os.getuid()):
            return True
        if self._group_gid is None:
            return False
        if peer.gid == self._group_gid:
            return True
        try:
            return pwd.getpwuid(peer.uid).pw_name in self._group_members
        except KeyError:
            return False

    def _accept(self) -> None:
        assert self._listener is not None
        listener, wake = self._listener, self._wake[0]
        watched = [listener.fileno(), wake]
        backoff = 0.0  # > 0 while accept fails: the pause before the next try
        while True:
            # Wait on the listener and on our wake-up pipe: stopping never has to shut the
            # listening socket down, which would break it for systemd when it is activated.
            readable, _, _ = select.select(watched, [], [])
            if wake in readable:
                return
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue  # another accept took it (or the peer gave up)
            except ConnectionAbortedError:
                continue  # that one peer's trouble
            except OSError as error:
                # Out of descriptors (EMFILE, ENFILE) or memory: the listener stays readable,
                # so pause (the closing event cuts it short) rather than spin, then try again.
                # Logged once per episode; the listener never ends on its own.
                if not backoff:
                    _log.warning("control socket: cannot accept (%s): pausing", error)
                backoff = min(max(backoff * 2, _BACKOFF[0]), _BACKOFF[1])
                if self._closing.wait(backoff):
                    return
                continue
            if backoff:
                _log.warning("control socket: accepting connections again")
                backoff = 0.0
            conn.setblocking(True)
            self._admit(conn)

    def _admit(self, conn: socket.socket) -> None:
        with self._lock:
            if self._stopping:
                conn.close()
                return
            idle = None
            full = len(self._connections) >= self.max_connections
            if full:
                idle = self._idlest()  # None: every connection is in a call
            over = full and idle is None
            report, self._full = full and not self._full, full  # once per episode
            if not over:
                thread = threading.Thread(
                    target=self._serve, args=(conn,), name="actord-control-conn", daemon=False
                )
                self._connections[conn] = _Conn(thread)
        if report:
            _log.warning(
                "control socket: %d connections open (daemon.max_connections): the idlest "
                "make room, or newcomers are refused while all are in a call",
                self.max_connections,
            )
        if idle is not None:
            # At the cap: the connection idle the longest (one that never asked anything
            # first) makes room, told why; a flood of idle connections cannot lock people out.
            with contextlib.suppress(OSError):  # it may be closing on its own
                idle.send(_BUMPED, socket.MSG_DONTWAIT)
                idle.shutdown(socket.SHUT_RDWR)
        if over:
            self._reject(conn, ErrorCode.BUSY, "too many connections; try again")
            return
        thread.start()

    def _idlest(self) -> socket.socket | None:
        # Called with _lock held: the connection waiting for a request the longest, those
        # that never sent one first; None if every one is in a call.
        waiting = [(c.used, c.idle_since, s) for s, c in self._connections.items() if c.idle_since]
        if not waiting:
            return None
        _, _, sock = min(waiting, key=lambda w: (w[0], w[1]))
        self._connections[sock].idle_since = 0.0  # closing: not chosen twice
        return sock

    def _reject(self, conn: socket.socket, code: ErrorCode, message: str) -> None:
        try:
            conn.settimeout(1.0)
            conn.sendall(_error(0, code, message))
        except OSError as error:
            _log.debug("could not tell a rejected peer why: %s", error)
        finally:
            conn.close()

    def _serve(self, conn: socket.socket) -> None:
        try:
            peer = _peer(conn)
            if not self.allowed(peer):
                logging.getLogger("actord.audit").warning(
                    "connection by uid %d pid %d: refused forbidden (not root, our uid or in "
                    "daemon.socket_group)",
                    peer.uid,
                    peer.pid,
                )
                self._reject(conn, ErrorCode.FORBIDDEN, "this user may not control actord")
                return
            # Kernel timeouts on a blocking socket, not settimeout(): no poll() before every
            # recv and send. A silent peer times out the recv (idle); one that will not read
            # times out the send, so neither holds this thread for ever.
            timeout = _timeval(self.idle_timeout)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
            decoder = FrameDecoder(self.frame_limit)
            state = self._connections[conn]
            while True:
                state.idle_since = time.monotonic()  # a plain store: read by _idlest
                try:
                    data = conn.recv(65536)
                except BlockingIOError:
                    return  # idle past the timeout: close
                if not data:
                    return
                state.idle_since = 0.0
                state.used = True
                decoder.feed(data)
                for message in decoder:
                    if not isinstance(message, Request):
                        raise ProtocolError(ErrorCode.BAD_REQUEST, "only requests are accepted")
                    call = Call(message, peer, conn.sendall, conn)
                    conn.sendall(self._answer(call))
                    if call.hangup:
                        return
        except ProtocolError as error:
            self._reject(conn, error.code, str(error))
        except OSError as error:
            _log.debug("control connection ended: %s", error)
        finally:
            conn.close()
            with self._lock:
                self._connections.pop(conn, None)

    def _answer(self, call: Call) -> bytes:
        request = call.request
        try:
            result = self.handler(call)
        except Refused as error:  # a refusal with its own code (a handler's, a bad param)
            call.hangup = isinstance(error, Hangup)
            return _error(request.msgid, error.code, str(error))
        except ActordError as error:  # the runtime's own refusals (a timeout, a dead actor)
            return _error(request.msgid, ErrorCode.INTERNAL, f"{error.code.value}: {error}")
        return encode_response(request.msgid, None, result)

    def close_listener(self) -> None:
        """Take no new connections (the socket file goes unless systemd owns it); open ones
        are still served."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self._closing.set()
        os.write(self._wake[1], b"x")
        if self._accept_thread is not None:
            self._accept_thread.join(5.0)
        if self._listener is not None:
            # Only our descriptor is closed: an activated socket stays open in systemd.
            self._listener.close()
        if self._owns_path:
            Path(self.path).unlink(missing_ok=True)
        for fd in self._wake:
            os.close(fd)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection, join the threads, remove the socket."""
        self.close_listener()
        with self._lock:
            connections = [(conn, c.thread) for conn, c in self._connections.items()]
        for conn, _ in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError as error:
                _log.debug("shutting a control connection down: %s", error)
        deadline = time.monotonic() + timeout  # one deadline for all: not `timeout` each
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))


def _check_private(directory: Path) -> None:
    """Refuse a socket directory someone else could swap the socket in: one that another
    user owns (a /tmp/actord-<uid> made first by someone else) or that others may write."""
    info = directory.stat()
    if info.st_uid not in (os.getuid(), 0):
        raise PermissionError(
            errno.EPERM, f"the socket directory {directory} belongs to uid {info.st_uid}, not us"
        )
    if info.st_mode & 0o022:
        raise PermissionError(
            errno.EPERM,
            f"the socket directory {directory} may be written by others "
            f"(mode {info.st_mode & 0o777:o}): make it 0750 or 0700",
        )
