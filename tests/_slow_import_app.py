"""An application whose import does not end by itself, as a large library's import seems to
on a loaded machine: it tells the test harness (a notify datagram) that the daemon is inside
it, then waits."""

from __future__ import annotations

import os
import socket
import threading

with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as _note:
    _note.sendto(b"X-IMPORTING=1", os.environ["NOTIFY_SOCKET"])
threading.Event().wait(120)


def factory(system: object, config: object) -> object:
    raise AssertionError("the import was not interrupted")
