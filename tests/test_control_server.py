"""The control socket server: a real Unix socket, real peers, real limits."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack
import pytest

from actord.control.protocol import encode_request
from actord.control.server import Call, ControlServer
from actord.daemon.config import ConfigError
from actord.runtime.errors import ErrorCode, Refused

from ._daemon import connect_unix
from ._peers import probe_as_nobody
from .conftest import WAIT


def handler(call: Call) -> Any:
    if call.method == "echo":
        return list(call.params)
    if call.method == "whoami":
        return call.peer.uid
    if call.method == "count":  # streams notifications, then answers
        for i in range(call.params[0]):
            call.notify("tick", [i])
        return "counted"
    raise Refused(ErrorCode.UNKNOWN_METHOD, f"no method {call.method!r}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ControlServer]:
    srv = ControlServer(
        str(tmp_path / "run" / "actord.sock"), handler, max_connections=20, idle_timeout=5.0
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _call(sock: socket.socket, msgid: int, method: str, params: list[Any]) -> list[Any]:
    sock.sendall(encode_request(msgid, method, params))
    return _read(sock)


def _read(sock: socket.socket) -> list[Any]:
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        data = sock.recv(65536)
        assert data, "the server closed the connection"
        unpacker.feed(data)
        for item in unpacker:
            return list(item)


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_request_response_and_errors(server: ControlServer) -> None:
    with connect_unix(server.path) as sock:
        assert _call(sock, 1, "echo", ["a", 2]) == [1, 1, None, ["a", 2]]
        assert _call(sock, 2, "whoami", []) == [1, 2, None, os.getuid()]
        kind, msgid, error, result = _call(sock, 3, "nope", [])
        assert (kind, msgid, result) == (1, 3, None)
        assert error["code"] == "unknown_method"


def test_socket_and_directory_modes(server: ControlServer) -> None:
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(Path(server.path).parent).st_mode) == 0o750
    assert stat.S_ISSOCK(os.stat(server.path).st_mode)


def test_a_bad_frame_closes_only_that_connection(server: ControlServer) -> None:
    with connect_unix(server.path) as good, connect_unix(server.path) as bad:
        bad.sendall(msgpack.packb({"not": "a request"}))
        kind, _, error, _ = _read(bad)
        assert kind == 1 and error["code"] == "bad_request"
        assert _closed(bad)
        assert _call(good, 9, "echo", [1])[3] == [1]


def test_an_oversized_frame_is_refused(server: ControlServer) -> None:
    with connect_unix(server.path) as sock:
        sock.sendall(encode_request(1, "echo", ["x" * (2 << 20)])[: (1 << 20) + 4096])
        _, _, error, _ = _read(sock)
        assert error["code"] == "too_large"
        assert _closed(sock)


def test_at_the_cap_the_idlest_connection_makes_room(tmp_path: Path) -> None:
    srv = ControlServer(str(tmp_path / "s.sock"), handler, max_connections=2, idle_timeout=5.0)
    srv.start()
    try:
        first, second = connect_unix(srv.path), connect_unix(srv.path)
        assert _call(second, 1, "echo", [])[2] is None  # both admitted and served
        assert _call(first, 1, "echo", [])[2] is None  # second is now the idlest
        with connect_unix(srv.path) as third:
            assert _call(third, 1, "echo", ["in"])[3] == ["in"]  # served at once
            _, _, error, _ = _read(second)  # told why, then closed
            assert error["code"] == "busy"
            assert "daemon.max_connections" in error["message"]
            assert _closed(second)
            assert _call(first, 2, "echo", [])[2] is None  # the other one goes on
        first.close()
        second.close()
    finally:
        srv.stop()


def test_a_connection_that_never_asked_goes_first(tmp_path: Path) -> None:
    srv = ControlServer(str(tmp_path / "s.sock"), handler, max_connections=2, idle_timeout=5.0)
    srv.start()
    try:
        silent = connect_unix(srv.path)
        user = connect_unix(srv.path)
        assert _call(user, 1, "echo", [])[2] is None  # idle since later, but it asked
        with connect_unix(srv.path) as third:
            assert _call(third, 1, "echo", [])[2] is None
            assert _read(silent)[2]["code"] == "busy"
            assert _call(user, 2, "echo", [])[2] is None
        silent.close()
        user.close()
    finally:
        srv.stop()


def test_connections_over_the_cap_all_in_calls_get_busy(tmp_path: Path) -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    def blocking(call: Call) -> Any:
        if call.method == "block":
            entered.release()
            release.wait(WAIT)
            return "released"
        return handler(call)

    srv = ControlServer(str(tmp_path / "s.sock"), blocking, max_connections=2, idle_timeout=5.0)
    srv.start()
    try:
        first, second = connect_unix(srv.path), connect_unix(srv.path)
        for sock in (first, second):
            sock.sendall(encode_request(1, "block", []))
        for _ in range(2):
            assert entered.acquire(timeout=WAIT)  # both in a call: none is idle
        with connect_unix(srv.path) as third:
            _, _, error, _ = _read(third)
            assert error["code"] == "busy"
            assert _closed(third)
        release.set()
        assert _read(first)[3] == "released"
        assert _read(second)[3] == "released"
        first.close()
        second.close()
    finally:
        release.set()
        srv.stop()


def test_an_idle_connection_is_closed(tmp_path: Path) -> None:
    srv = ControlServer(str(tmp_path / "s.sock"), handler, idle_timeout=0.2)
    srv.start()
    try:
        with connect_unix(srv.path) as sock:
            sock.sendall(encode_request(1, "echo", [])[:3])  # half a frame, then silence
            assert _closed(sock)
    finally:
        srv.stop()


def test_many_clients_many_requests_no_errors(server: ControlServer) -> None:
    def client(n: int) -> int:
        with connect_unix(server.path) as sock:
            for i in range(200):
                reply = _call(sock, i, "echo", [n, i])
                assert reply == [1, i, None, [n, i]]
        return n

    with ThreadPoolExecutor(16) as pool:
        assert sorted(pool.map(client, range(16))) == list(range(16))


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a client as nobody")
def test_another_user_is_forbidden(tmp_path: Path) -> None:
    calls: list[int] = []

    def recording(call: Call) -> Any:
        calls.append(call.peer.uid)
        return "ran"

    # pytest's own temp dirs are 0700: nobody could not even reach the socket there.
    shared = Path(tempfile.mkdtemp(prefix="actord-peer-", dir="/tmp"))
    os.chmod(shared, 0o755)
    srv = ControlServer(str(shared / "run" / "s.sock"), recording, idle_timeout=5.0)
    srv.start()
    try:
        os.chmod(Path(srv.path).parent, 0o755)  # let nobody reach the socket to be refused
        os.chmod(srv.path, 0o666)
        seen = probe_as_nobody(srv.path, "echo")
    finally:
        srv.stop()
        shutil.rmtree(shared)
    refusal = [1, 0, {"code": "forbidden", "message": "this user may not control actord"}, None]
    assert seen == {"replies": [refusal], "write": "BrokenPipeError", "client": "forbidden"}
    assert calls == []  # the handler never ran, not even for the client's request


def test_stop_joins_every_thread_and_removes_the_socket(tmp_path: Path) -> None:
    srv = ControlServer(str(tmp_path / "s.sock"), handler)
    srv.start()
    with connect_unix(srv.path) as sock:
        assert _call(sock, 1, "echo", [])[2] is None
        srv.stop()
        assert _closed(sock)
    assert not Path(srv.path).exists()
    assert not [t for t in threading.enumerate() if t.name.startswith("actord-control")]


def test_a_handler_streams_notifications_before_its_response(server: ControlServer) -> None:
    with connect_unix(server.path) as sock:
        sock.sendall(encode_request(7, "count", [3]))
        unpacker = msgpack.Unpacker(raw=False)
        seen: list[Any] = []
        while len(seen) < 4:
            data = sock.recv(65536)
            assert data, "the server closed the connection early"
            unpacker.feed(data)
            seen.extend(unpacker)
    assert seen == [[2, "tick", [0]], [2, "tick", [1]], [2, "tick", [2]], [1, 7, None, "counted"]]


def test_a_second_server_on_a_live_socket_is_refused(server: ControlServer) -> None:
    other = ControlServer(server.path, handler)
    with pytest.raises(ConfigError, match=r"^daemon\.socket: another server") as refused:
        other.start()
    assert "Errno" not in str(refused.value)
    with connect_unix(server.path) as sock:  # the first one still serves
        assert _call(sock, 1, "echo", [1])[3] == [1]


def test_a_socket_group_owns_the_socket_and_its_directory(tmp_path: Path) -> None:
    import grp

    group = grp.getgrgid(os.getgid() if os.getgid() != 0 else 100)
    srv = ControlServer(str(tmp_path / "run" / "s.sock"), handler, group=group.gr_name)
    srv.start()
    try:
        assert os.stat(srv.path).st_gid == group.gr_gid
        assert os.stat(os.path.dirname(srv.path)).st_gid == group.gr_gid
        assert stat.S_IMODE(os.stat(srv.path).st_mode) == 0o660
    finally:
        srv.stop()


def test_an_unknown_socket_group_is_a_config_error_naming_the_key(tmp_path: Path) -> None:

    with pytest.raises(ConfigError, match=r"daemon\.socket_group"):
        ControlServer(str(tmp_path / "s.sock"), handler, group="no-such-group-here")


class _Group:
    gr_gid = 4242
    gr_mem = ["alice"]


class _User:
    def __init__(self, name: str) -> None:
        self.pw_name = name


@pytest.fixture
def grouped(monkeypatch: pytest.MonkeyPatch) -> ControlServer:
    """A server whose socket_group is gid 4242 with one supplementary member, alice (fake
    group and user databases: the decision is tested without root)."""
    import actord.control.server as server_module

    users = {1001: "alice", 1002: "bob"}
    monkeypatch.setattr(server_module.grp, "getgrnam", lambda name: _Group())

    def getpwuid(uid: int) -> _User:
        if uid not in users:
            raise KeyError(uid)
        return _User(users[uid])

    monkeypatch.setattr(server_module.pwd, "getpwuid", getpwuid)
    return ControlServer("/nonexistent/actord.sock", handler, group="actord")


@pytest.mark.parametrize(
    ("uid", "gid", "allowed"),
    [
        (0, 4242, True),  # root
        (0, 1, True),
        (os.getuid(), 1, True),  # the daemon's own uid
        (1002, 4242, True),  # bob's primary group is the socket group
        (1002, 4243, False),  # bob, another group, not a member
        (1001, 1, True),  # alice: a supplementary member
        (1003, 4243, False),  # a uid with no passwd entry, another group
        (1003, 4242, True),  # ... but in the socket group
    ],
)
def test_who_may_use_the_socket(grouped: ControlServer, uid: int, gid: int, allowed: bool) -> None:
    from actord.control.server import Peer

    if uid == os.getuid() and uid in (1001, 1002, 1003):
        pytest.skip("the test's own uid collides with a fake one")
    assert grouped.allowed(Peer(pid=1, uid=uid, gid=gid)) is allowed


def test_without_a_socket_group_only_root_and_our_uid_may() -> None:
    from actord.control.server import Peer

    alone = ControlServer("/nonexistent/actord.sock", handler)
    assert alone.allowed(Peer(1, 0, 0))
    assert alone.allowed(Peer(1, os.getuid(), os.getgid()))
    other = 65534 if os.getuid() != 65534 else 65533
    assert not alone.allowed(Peer(1, other, os.getgid()))  # our gid is not enough


def test_a_socket_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    # Someone who may write the directory could put their own socket where clients look.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    srv = ControlServer(str(shared / "s.sock"), _ok)
    with pytest.raises(PermissionError, match="may be written by others"):
        srv.start()
    assert not (shared / "s.sock").exists()


@pytest.mark.skipif(os.getuid() != 0, reason="making a directory another user owns needs root")
def test_a_socket_directory_another_user_owns_is_refused(tmp_path: Path) -> None:
    # /tmp/actord-<uid>, made first by someone else.
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    srv = ControlServer(str(theirs / "s.sock"), _ok)
    with pytest.raises(PermissionError, match="belongs to uid 65534"):
        srv.start()


def _ok(call: Call) -> str:
    return "ok"


class _Seen(logging.Handler):
    """Sets an event per message text seen (a substring), and keeps every message."""

    def __init__(self, *texts: str) -> None:
        super().__init__()
        self.events = {text: threading.Event() for text in texts}
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        for text, event in self.events.items():
            if text in message:
                event.set()


@contextlib.contextmanager
def no_free_descriptors() -> Iterator[None]:
    """This process cannot open a descriptor (EMFILE) until the block ends: its soft limit
    is lowered to its lowest free descriptor number (those open stay usable)."""
    lowest = os.dup(0)
    os.close(lowest)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_accept_loop_survives_running_out_of_descriptors(tmp_path: Path) -> None:
    seen = _Seen("cannot accept", "accepting connections again")
    logger = logging.getLogger("actord.control")
    logger.addHandler(seen)
    srv = ControlServer(str(tmp_path / "s.sock"), handler, idle_timeout=5.0)
    srv.start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # made before the limit
    try:
        with no_free_descriptors():
            client.connect(srv.path)  # queued by the kernel; accept() fails with EMFILE
            assert seen.events["cannot accept"].wait(WAIT)
            threading.Event().wait(0.3)  # an episode long enough for several retries
        assert seen.events["accepting connections again"].wait(WAIT)
        client.settimeout(WAIT)
        assert _call(client, 1, "echo", ["after"])[3] == ["after"]  # served once it could be
        assert sum("cannot accept" in m for m in seen.messages) == 1  # once per episode
        with connect_unix(srv.path) as other:  # and it goes on accepting
            assert _call(other, 1, "echo", [])[2] is None
    finally:
        logger.removeHandler(seen)
        client.close()
        srv.stop()
