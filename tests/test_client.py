"""The control client against a stand-in server on a real Unix socket: what a refused peer
sees when the server answered and closed before (or while) the request was written."""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actord.control.client import Client, RemoteError
from actord.control.ctl import main as actorctl
from actord.control.protocol import encode_response

REFUSALS = {
    "forbidden": "this user may not control actord",
    "busy": "too many connections; try again",
}


def _refusal(code: str) -> bytes:
    # As the server's _reject: msgid 0, the connection's answer rather than a request's.
    return encode_response(0, {"code": code, "message": REFUSALS[code]}, None)


class _OneShotServer(threading.Thread):
    """Accepts one peer, sends it `frame` unprompted and closes, as ControlServer does to a
    refused peer. With `mid_write`, it first waits for the peer's write to begin, so the close
    lands in the middle of a request too large for the socket's buffers."""

    def __init__(self, path: str, frame: bytes, *, mid_write: bool = False) -> None:
        super().__init__(name="test-one-shot-server")
        self.frame = frame
        self.mid_write = mid_write
        self.closed = threading.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.listener.settimeout(30)

    def run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(30)
                conn.sendall(self.frame)
                if self.mid_write:
                    assert conn.recv(1), "the peer never began its write"
            # Closed with the peer's request unread: its write now fails (EPIPE/ECONNRESET).
        finally:
            self.listener.close()
            self.closed.set()


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "s.sock")


@pytest.fixture
def servers() -> Iterator[list[_OneShotServer]]:
    started: list[_OneShotServer] = []
    yield started
    for server in started:
        server.join(30)
        assert not server.is_alive()


def _serve(
    servers: list[_OneShotServer], path: str, frame: bytes, *, mid_write: bool = False
) -> _OneShotServer:
    server = _OneShotServer(path, frame, mid_write=mid_write)
    server.start()
    servers.append(server)
    return server


@pytest.mark.parametrize("code", sorted(REFUSALS))
def test_a_refusal_sent_before_the_request_is_raised_not_a_broken_pipe(
    servers: list[_OneShotServer], path: str, code: str
) -> None:
    server = _serve(servers, path, _refusal(code))
    with Client(path, timeout=30) as client:
        assert server.closed.wait(30)  # answered and closed before we write: EPIPE for sure
        with pytest.raises(RemoteError) as refused:
            client.call("shutdown")
    assert (refused.value.code, refused.value.message) == (code, REFUSALS[code])
    assert isinstance(refused.value.__cause__, BrokenPipeError)  # the write did fail


def test_a_refusal_sent_while_a_large_request_is_written_is_raised(
    servers: list[_OneShotServer], path: str
) -> None:
    _serve(servers, path, _refusal("forbidden"), mid_write=True)
    with Client(path, timeout=30) as client, pytest.raises(RemoteError) as refused:
        # Far more than a Unix socket buffers: the write is still going when the server closes.
        client.call("echo", "x" * (16 << 20))
    assert refused.value.code == "forbidden"
    assert isinstance(refused.value.__cause__, BrokenPipeError | ConnectionResetError)


class _ResetOnWrite:
    """The client's socket, except that writing reports ECONNRESET: what a send may say when
    the peer closed with our data unread (Linux's AF_UNIX says EPIPE, so this stands in)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def sendall(self, data: bytes) -> None:
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_a_refusal_behind_a_reset_write_is_raised(
    servers: list[_OneShotServer], path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _serve(servers, path, _refusal("busy"))
    with Client(path, timeout=30) as client:
        monkeypatch.setattr(client, "_sock", _ResetOnWrite(client._sock))
        assert server.closed.wait(30)
        with pytest.raises(RemoteError) as refused:
            client.call("ping")
    assert refused.value.code == "busy"
    assert isinstance(refused.value.__cause__, ConnectionResetError)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(encode_response(3, {"code": "internal"}, None), id="an earlier call's error"),
        pytest.param(b"\xc1", id="an undecodable byte"),
    ],
)
def test_without_a_refusal_the_broken_pipe_is_raised_as_it_was(
    servers: list[_OneShotServer], path: str, frame: bytes
) -> None:
    server = _serve(servers, path, frame)
    with Client(path, timeout=30) as client:
        assert server.closed.wait(30)
        with pytest.raises(BrokenPipeError):
            client.call("ping")


@pytest.mark.parametrize("code", sorted(REFUSALS))
def test_actorctl_prints_the_refusal(
    servers: list[_OneShotServer], path: str, code: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A large request (a submit with a long pattern) so the write is under way at the close.
    _serve(servers, path, _refusal(code), mid_write=True)
    argv = ["--socket", path, "submit", "log", "/o", "--input", "/i", "--pattern", "x" * (8 << 20)]
    assert actorctl(argv) == 1
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"actorctl: {code}: {REFUSALS[code]}\n")
