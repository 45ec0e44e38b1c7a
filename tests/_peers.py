"""A control-socket peer running as another user (nobody), for the refusal tests (needs root).

The server refuses such a peer as soon as it connects: it sends one error frame (msgid 0)
unprompted and closes without reading. So the peer reads first, and only then writes: a
write that raced the close could fail with EPIPE before the answer was read.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import traceback
from typing import Any

import msgpack

from actord.control.client import Client, RemoteError
from actord.control.protocol import encode_request


def _replies_until_closed(sock: socket.socket) -> list[Any]:
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    replies: list[Any] = []
    while data := sock.recv(65536):  # we wrote nothing: the close is a plain EOF, not a reset
        unpacker.feed(data)
        replies.extend(unpacker)
    return replies


def _probe(path: str, method: str) -> dict[str, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(30)
        sock.connect(path)
        replies = _replies_until_closed(sock)
        try:  # the connection is closed by now, so nothing written can reach the server
            sock.sendall(encode_request(1, method, []))
            write = "written"
        except OSError as error:
            write = type(error).__name__
    try:  # the client writes first; whenever the close comes, it must report the refusal
        with Client(path, timeout=30) as client:
            client.call(method)
        client_saw = "answered"
    except RemoteError as error:
        client_saw = error.code
    return {"replies": replies, "write": write, "client": client_saw}


def probe_as_nobody(path: str, method: str) -> dict[str, Any]:
    """Fork; the child becomes nobody and connects to the control socket at `path`: it reads
    whatever the server sends until the close (`replies`), then tries to send a `method`
    request on that connection (`write`: "written" or the error's name), then calls `method`
    with a `Client` (`client`: the RemoteError code, or "answered")."""
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest, whatever happens
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            report: dict[str, Any] = _probe(path, method)
        except BaseException:
            report = {"child failed": traceback.format_exc()}
        try:
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        chunks = []
        while chunk := os.read(read_end, 65536):  # until the child exits and the pipe closes
            chunks.append(chunk)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    result: dict[str, Any] = json.loads(b"".join(chunks))
    return result
