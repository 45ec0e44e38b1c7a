"""The control socket of a real daemon under abuse, load and strangers."""

from __future__ import annotations

import os
import pwd
import socket
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actord.control.client import Client, RemoteError

from ._daemon import DaemonProcess, connect_unix
from ._peers import probe_as_nobody


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = DaemonProcess(
        tmp_path_factory.mktemp("control"), "--max-connections", "48", "--idle-timeout", "2"
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _replies_until_closed(sock: socket.socket) -> list[Any]:
    """Everything the server sends until it closes the connection."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    replies: list[Any] = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        unpacker.feed(data)
        replies.extend(unpacker)
    return replies


def _abuse(path: str, payload: bytes) -> list[Any]:
    with connect_unix(path) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)  # the rest of a half-sent frame never comes
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server already answered and closed
        return _replies_until_closed(sock)


def _error_code(replies: list[Any]) -> str:
    assert replies, "expected an error reply before the close"
    kind, _msgid, error, _result = replies[-1]
    assert kind == 1 and error is not None
    return str(error["code"])


@pytest.mark.parametrize(
    ("name", "payload", "code"),
    [
        ("oversized frame", msgpack.packb([0, 1, "ping", ["x" * (2 << 20)]]), "too_large"),
        ("huge array header", b"\xdd\xff\xff\xff\xff", "bad_request"),
        ("huge map header", b"\xdf\xff\xff\xff\xff", "bad_request"),
        ("deep nesting", b"\x94\x00\x01\xa4ping\x91" + b"\x91" * 100 + b"\xc0", "bad_request"),
        ("ext type", msgpack.packb([0, 1, "ping", [msgpack.ExtType(5, b"x")]]), "bad_request"),
        ("integer keys", msgpack.packb([0, 1, "ping", [{1: 2}]]), "bad_request"),
        ("not a list", msgpack.packb({"method": "ping"}), "bad_request"),
        ("a response, not a request", msgpack.packb([1, 1, None, None]), "bad_request"),
        ("bad utf-8", b"\x94\x00\x01\xa2\xff\xfe\x90", "bad_request"),
    ],
)
def test_each_malformed_frame_gets_an_error_and_a_closed_connection(
    daemon: DaemonProcess, name: str, payload: bytes, code: str
) -> None:
    assert _error_code(_abuse(daemon.socket, payload)) == code, name
    assert daemon.call("ping") == "pong"


@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.binary(min_size=1, max_size=64))
def test_random_bytes_never_hurt_the_daemon(daemon: DaemonProcess, payload: bytes) -> None:
    replies = _abuse(daemon.socket, payload)
    for reply in replies:  # whatever came back is a well-formed response
        assert isinstance(reply, list) and reply[0] == 1


def test_after_thousands_of_bad_frames_memory_is_bounded_and_others_are_served(
    daemon: DaemonProcess,
) -> None:
    process = psutil.Process(daemon.pid)
    with daemon.client() as steady:
        before = process.memory_info().rss
        for i in range(300):
            _abuse(daemon.socket, b"\xdb" + (1 << 20).to_bytes(4, "big") + b"y" * 4096)
            _abuse(daemon.socket, msgpack.packb([0, i, "ping", ["x" * (2 << 20)]]))
            assert steady.call("ping") == "pong"
        grown = process.memory_info().rss - before
    assert grown < 64 << 20, f"RSS grew by {grown >> 20} MiB"


def test_at_the_cap_the_idlest_client_makes_room(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, "--max-connections", "4", "--idle-timeout", "1")
    daemon.start()
    try:
        with daemon.client() as good:
            assert good.call("ping") == "pong"
            idle = [connect_unix(daemon.socket) for _ in range(2)]
            half = connect_unix(daemon.socket)
            half.sendall(msgpack.packb([0, 1, "ping", []])[:3])
            # good + 2 idle + 1 half-sent = 4: the cap. The next one is served, and the
            # client idle the longest that never asked anything is told why and closed.
            with connect_unix(daemon.socket) as over:
                over.sendall(msgpack.packb([0, 9, "ping", []]))
                over.shutdown(socket.SHUT_WR)
                assert _replies_until_closed(over)[-1][3] == "pong"
            assert _error_code(_replies_until_closed(idle[0])) == "busy"
            assert good.call("ping") == "pong"  # served meanwhile
            for sock in [*idle[1:], half]:  # closed by the server after the idle timeout
                sock.settimeout(10)
                assert sock.recv(100) == b""
            for sock in [*idle, half]:
                sock.close()
            with daemon.client() as later:  # room again
                assert later.call("ping") == "pong"
    finally:
        daemon.stop()


def test_the_socket_is_0660_in_a_private_directory(daemon: DaemonProcess) -> None:
    mode = os.stat(daemon.socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    assert stat.S_IMODE(os.stat(os.path.dirname(daemon.socket)).st_mode) == 0o750


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to nobody needs root")
def test_a_peer_running_as_nobody_is_refused(daemon: DaemonProcess) -> None:
    # Let nobody reach the socket through the directory, so the refusal is SO_PEERCRED's.
    directory = os.path.dirname(daemon.socket)
    top = os.path.dirname(directory)  # the harness's private temp dir
    os.chmod(top, 0o755)
    os.chmod(directory, 0o755)
    os.chmod(daemon.socket, 0o666)
    before = daemon.call("status")["jobs_queued"]
    try:
        seen = probe_as_nobody(daemon.socket, "shutdown")
    finally:
        os.chmod(top, 0o700)
        os.chmod(directory, 0o750)
        os.chmod(daemon.socket, 0o660)
    refusal = [1, 0, {"code": "forbidden", "message": "this user may not control actord"}, None]
    assert seen == {"replies": [refusal], "write": "BrokenPipeError", "client": "forbidden"}
    assert daemon.call("ping") == "pong"  # the shutdown never ran
    assert daemon.call("status")["jobs_queued"] == before
    nobody = pwd.getpwnam("nobody").pw_uid
    assert f"actord.audit [actor=daemon cid=-] connection by uid {nobody} pid" in daemon.tail(400)


def _escapes(daemon: DaemonProcess) -> list[tuple[str, dict[str, Any], str]]:
    good_in = daemon.inputs / "ok.log"
    good_in.write_text("2026-11-25 10:00:00 [INFO] fine\n")
    outside = daemon.base / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.log").write_text("no\n")
    link = daemon.inputs / "link.log"
    if not link.exists():
        link.symlink_to(outside / "secret.log")
    sibling = Path(str(daemon.inputs) + "-other")
    sibling.mkdir(exist_ok=True)
    (sibling / "x.log").write_text("no\n")
    out = str(daemon.outputs / "o.jsonl")
    good = str(good_in)
    return [
        ("dot-dot", {"input": f"{daemon.inputs}/../outside/secret.log", "output": out}, "path"),
        ("symlink out", {"input": str(link), "output": out}, "path"),
        ("sibling prefix", {"input": str(sibling / "x.log"), "output": out}, "path"),
        ("NUL byte", {"input": good + "\x00.txt", "output": out}, "path"),
        ("relative", {"input": "in/ok.log", "output": out}, "path"),
        ("output outside", {"input": good, "output": "/etc/actord-test.jsonl"}, "path"),
        ("output is a root", {"input": good, "output": str(daemon.outputs)}, "path"),
        ("output in inputs", {"input": good, "output": good}, "path"),
        ("non-string", {"input": 42, "output": out}, "bad_request"),
        ("missing input", {"input": str(daemon.inputs / "nope.log"), "output": out}, "path"),
    ]


def test_path_escapes_are_refused_and_nested_paths_accepted(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        for name, paths, expected in _escapes(daemon):
            with pytest.raises(RemoteError) as refused:
                client.call("submit", {"kind": "log", **paths})
            code = refused.value.code
            assert code == ("invalid_path" if expected == "path" else expected), name
        nested = daemon.outputs / "a" / "b"
        nested.mkdir(parents=True, exist_ok=True)
        job = {"kind": "log", "input": str(daemon.inputs / "ok.log"), "output": str(nested / "o")}
        accepted = client.call("submit", job)
        final = client.stream("watch", accepted["id"], on_notification=None)
    assert final["state"] == "done" and (nested / "o").read_text().count("\n") == 1


def test_16_clients_times_500_requests_without_an_error(daemon: DaemonProcess) -> None:
    def client_run(index: int) -> int:
        answered = 0
        with Client(daemon.socket, timeout=30) as client:
            for i in range(500):
                method = "status" if (i + index) % 5 == 0 else "ping"
                result = client.call(method)
                answered += result == "pong" or isinstance(result, dict)
        return answered

    with ThreadPoolExecutor(16) as pool:
        answered = list(pool.map(client_run, range(16)))
    assert answered == [500] * 16


def _refusal(client: Client, *params: Any) -> RemoteError:
    with pytest.raises(RemoteError) as refused:
        client.call("send", *params)
    return refused.value


def test_commands_no_actor_declares_are_refused_and_never_reach_it(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        listed = client.call("actors")
        assert all(list(a["commands"]) == [] for a in listed)  # no built-in actor takes any
        before = {a["name"]: (a["restarts"], a["errors"]) for a in listed}
        # A pool member takes any message for a work unit and crashes on a command: this many
        # crashes (above the restart intensity, 5 in 60 s) would take the daemon down.
        for recipient in ("parser", "parser#0", "fft") * 4:
            refused = _refusal(client, recipient, "command", {"command": "command", "args": {}})
            assert refused.code == "bad_request"
            assert f"{recipient} does not accept the command 'command'" in refused.message
            assert "it accepts none" in refused.message
        refused = _refusal(client, "monitor", "command", {"command": "frob", "args": {"x": 1}})
        assert refused.code == "bad_request" and "'frob'" in refused.message
        after = {a["name"]: (a["restarts"], a["errors"]) for a in client.call("actors")}
        assert client.call("ping") == "pong"
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert {name: after[name] for name in before} == before


def test_pool_members_answer_to_the_names_actors_prints(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        parsers = [a["name"] for a in client.call("actors") if a["pool"] == "parser"]
        assert parsers == ["parser#0", "parser#1"]
        for member in parsers:
            assert client.call("send", member, "ping")["actor"] == member
        restarts = {a["name"]: a["restarts"] for a in client.call("actors")}
        assert client.call("restart", "parser#1") == {"actor": "parser#1", "members": 1}
        client.call("send", "parser#1", "ping")  # taken after the restart: it is done
        after = {a["name"]: a["restarts"] for a in client.call("actors")}
        assert after["parser#1"] == restarts["parser#1"] + 1
        assert {n: r for n, r in after.items() if n != "parser#1"} == {
            n: r for n, r in restarts.items() if n != "parser#1"
        }
        for params in (("send", "parser#7", "ping"), ("restart", "parser#7")):
            with pytest.raises(RemoteError) as missing:
                client.call(*params)
            assert missing.value.code == "not_found"
            assert "members: parser#0, parser#1" in missing.value.message


def test_refusals_and_changes_leave_an_audit_line_with_the_peer(daemon: DaemonProcess) -> None:
    outside = str(daemon.base / "outside" / "some" / "deeply" / "nested" / "secret-file.log")
    with daemon.client() as client:
        with pytest.raises(RemoteError):
            client.call("submit", {"kind": "log", "input": outside, "output": "/x/o.jsonl"})
        client.call("scale", "parser", 2)
        client.call("status")  # reads leave no audit line
        log = daemon.tail(400).splitlines()
    me = f"by uid {os.getuid()} pid {os.getpid()}"
    (refused,) = [line for line in log if "actord.audit" in line and "secret-file" in line]
    assert "[actor=daemon cid=-]" in refused
    assert me in refused
    assert "input=…/nested/secret-file.log" in refused  # a long path, shortened
    assert "refused invalid_path:" in refused
    assert any(f"scale {me} (parser 2): ok" in line for line in log), log[-5:]
    assert not [line for line in log if "actord.audit" in line and "status" in line]
