"""The daemon's side of the Ray bridge: one `RayLink` per job system, shared by the Ray pool
members (thread-safe, as a channel is).

The link starts the bridge process (`_ray_bridge.py`) on first use, sends it calls and
resolves each call's future when its answer comes back (on the link's reader thread). A
cluster that cannot be reached leaves the link `DOWN`: calls fail at once with
`RayUnavailable` (whose message says what to check) and a new connection is tried no more
than once per `_RETRY_AFTER` seconds, so the next job after the cluster is back works.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, Any, Final

from actord import ActordError
from actord.runtime.errors import ErrorCode

from .frames import read_frame, write_frame

__all__ = ["RayLink", "RayState", "RayUnavailable", "RemoteCounters", "RemoteReply"]

_log: Final = logging.getLogger("actord.ray")
_RETRY_AFTER: Final = 2.0  # seconds between connection attempts to a cluster found down
_SLICE: Final = 0.1  # seconds between checks for a cancel while connecting
_CLOSE_GRACE: Final = 10.0  # seconds the bridge has to shut Ray down before it is killed


class RayState(StrEnum):
    OFF = "off"  # not connected yet (connects on first use)
    UP = "up"
    DOWN = "down"  # the last connection failed, or the bridge exited


class RayUnavailable(ActordError):
    """The Ray cluster cannot be reached: a job that needs it is refused or fails."""

    code = ErrorCode.UNAVAILABLE


@dataclass(frozen=True, slots=True)
class RemoteReply:
    """A call's answer: `kind` is the worker's own (ok, data, io, gone), `died` (the Ray
    actor or its node was lost) or `error` (the call raised)."""

    kind: str
    value: Any
    cpu_seconds: float


@dataclass(slots=True)
class RemoteCounters:
    """One pool member's remote figures: written by its thread, read at scrape time."""

    cpu_seconds: float = 0.0  # measured in the Ray worker, returned with each result
    units: int = 0
    moved_bytes: int = 0  # unit data and results carried by Ray (none on the shared path)
    in_flight: int = 0
    failures: int = 0  # units whose Ray actor or node was lost (or that timed out)
    retries: int = 0  # units sent again after such a loss


@dataclass(slots=True)
class _Bridge:
    process: subprocess.Popen[bytes]
    stdin: IO[bytes]
    reader: threading.Thread | None = None
    alive: bool = True  # until its reader thread sees it exit; guarded by the link's _lock
    # Calls sent and not yet answered, by request id; guarded by the link's _lock.
    pending: dict[int, Future[RemoteReply]] = field(default_factory=dict)
    slots: dict[int, str] = field(default_factory=dict)  # the slot of each pending call


class RayLink:
    def __init__(self, address: str, namespace: str = "actord", cpus_per_worker: float = 1.0):
        self.address = address
        self.namespace = namespace
        self.cpus_per_worker = cpus_per_worker
        self._ids = itertools.count(1)
        # _connect_lock serialises connection attempts (one bridge at a time).
        self._connect_lock = threading.Lock()
        # _lock guards _bridge, _state, _error, _retry_at, _nodes, _live, _closed and the
        # bridge's pending calls. Never held while writing to the bridge (see `_write`).
        self._lock = threading.Lock()
        # _write_lock guards the bridge's stdin: one frame at a time.
        self._write_lock = threading.Lock()
        self._bridge: _Bridge | None = None
        self._state = RayState.OFF
        self._error = ""
        self._retry_at = 0.0
        self._nodes = 0  # alive nodes, as last seen
        self._live: set[str] = set()  # members whose Ray worker answered their last call
        self._closed = False
        self.counters: dict[str, RemoteCounters] = {}  # per member; grows on first use only

    # -- what the pool members call (their own threads) -----------------------------------

    def call(
        self,
        slot: str,
        method: str,
        args: list[Any],
        timeout: float,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Future[RemoteReply]:
        """Call `method` on `slot`'s Ray actor; raises RayUnavailable if the cluster cannot
        be reached (connecting first, within `timeout`, if need be; given up as soon as
        `cancelled()` turns true)."""
        bridge = self._connected(timeout, cancelled, reconnect=False)
        return self._request(bridge, "call", [slot, method, args], slot)

    def _request(
        self, bridge: _Bridge, op: str, args: list[Any], slot: str | None = None
    ) -> Future[RemoteReply]:
        # Register the request's future, then send it; RayUnavailable if the bridge is gone.
        future: Future[RemoteReply] = Future()
        with self._lock:
            if not bridge.alive:
                raise RayUnavailable(self._explain(self._error or "the Ray driver exited"))
            request_id = next(self._ids)
            bridge.pending[request_id] = future
            if slot is not None:
                bridge.slots[request_id] = slot
        try:
            self._write(bridge, [request_id, op, args])
        except (OSError, ValueError):  # the bridge died: its reader thread fails the rest
            with self._lock:
                bridge.pending.pop(request_id, None)
                bridge.slots.pop(request_id, None)
            raise RayUnavailable(self._explain("the bridge exited")) from None
        return future

    def _write(self, bridge: _Bridge, frame: list[Any]) -> None:
        # Never with _lock held: a write waits for the bridge to read, and the bridge may be
        # waiting for our reader thread to drain its answers, which takes _lock.
        with self._write_lock:
            write_frame(bridge.stdin, frame)

    def drop(self, slot: str) -> None:
        """Kill `slot`'s Ray actor (a runaway unit): its next call gets a fresh one."""
        with self._lock:
            self._live.discard(slot)
            bridge = self._bridge
            if bridge is None or not bridge.alive:
                return
            request_id = next(self._ids)
        with contextlib.suppress(OSError, ValueError):
            self._write(bridge, [request_id, "drop", [slot]])

    def counters_for(self, slot: str) -> RemoteCounters:
        counters = self.counters.get(slot)
        if counters is None:
            counters = self.counters.setdefault(slot, RemoteCounters())
        return counters

    # -- the cluster's state (any thread) --------------------------------------------------

    def check(
        self,
        timeout: float,
        cancelled: Callable[[], bool] = lambda: False,
        *,
        reconnect: bool = False,
    ) -> None:
        """Raise RayUnavailable unless connected to the cluster. The first check connects;
        once the link is down, only a check with `reconnect` tries again (the host's, every
        few seconds): a submit or a unit is refused at once, not after a connection's wait."""
        self._connected(timeout, cancelled, reconnect=reconnect)

    def status(self) -> tuple[RayState, int, int]:
        """(state, alive nodes as last seen, members whose Ray worker answered their last
        call): never waits, for status and metrics."""
        with self._lock:
            state, nodes, live = self._state, self._nodes, len(self._live)
        return (state, nodes, live) if state is RayState.UP else (state, 0, 0)

    def probe(self, timeout: float) -> tuple[RayState, int, int]:
        """`status()` once the bridge has told the alive nodes (if connected)."""
        with self._lock:
            bridge, state = self._bridge, self._state
        if bridge is None or state is not RayState.UP:
            return state, 0, 0
        try:
            reply = self._request(bridge, "status", []).result(timeout)
        except FutureTimeout:
            return self.status()
        except RayUnavailable:
            return RayState.DOWN, 0, 0
        if reply.kind != "ok":
            return RayState.DOWN, 0, 0
        with self._lock:
            self._nodes = int(reply.value)
        return self.status()

    @property
    def state(self) -> RayState:
        return self._state

    # -- lifecycle -------------------------------------------------------------------------

    def shut(self) -> None:
        """Begin closing, without waiting: no call is taken any more, and the bridge is told
        to exit (its Ray actors end with it). `close` then waits for it."""
        with self._lock:
            self._closed = True
            bridge = self._bridge
        if bridge is not None:
            self._close_stdin(bridge)

    def _close_stdin(self, bridge: _Bridge) -> None:
        # The bridge's cue to exit. A writer stuck on a bridge that no longer reads holds
        # the write lock: then the bridge is killed instead (which fails that write).
        if self._write_lock.acquire(timeout=_SLICE * 10):
            try:
                with contextlib.suppress(OSError, ValueError):
                    bridge.stdin.close()
            finally:
                self._write_lock.release()
        else:
            with contextlib.suppress(OSError):
                bridge.process.kill()

    def close(self) -> None:
        """End the bridge (its Ray actors end with it) and join its reader thread."""
        with self._connect_lock:
            with self._lock:
                self._closed = True
                bridge, self._bridge = self._bridge, None
                self._state = RayState.OFF
            if bridge is not None:
                self._end(bridge)

    def _end(self, bridge: _Bridge) -> None:
        self._close_stdin(bridge)
        _reap(bridge.process)
        if bridge.reader is not None and bridge.reader is not threading.current_thread():
            bridge.reader.join()

    def _explain(self, why: str) -> str:
        return (
            f"the Ray cluster at {self.address!r} is unavailable ({why}); check that it runs "
            f"(`ray status --address {self.address}` on a node) and that this host reaches it"
        )

    def _connected(
        self, timeout: float, cancelled: Callable[[], bool], *, reconnect: bool
    ) -> _Bridge:
        with self._lock:
            if self._state is RayState.UP and self._bridge is not None:
                return self._bridge
            if self._state is RayState.DOWN and not reconnect:
                # Refused at once: not after a reconnection in progress elsewhere.
                raise RayUnavailable(self._explain(self._error))
        deadline = time.monotonic() + timeout
        while not self._connect_lock.acquire(timeout=_SLICE):  # another thread connects
            if cancelled() or time.monotonic() >= deadline:
                raise RayUnavailable(self._explain("still connecting"))
        with contextlib.ExitStack() as held:
            held.callback(self._connect_lock.release)
            with self._lock:
                if self._closed:
                    raise RayUnavailable("the Ray link is closed: the daemon is stopping")
                if self._state is RayState.UP and self._bridge is not None:
                    return self._bridge
                if self._state is RayState.DOWN and (
                    not reconnect or time.monotonic() < self._retry_at
                ):
                    raise RayUnavailable(self._explain(self._error))
            bridge = self._start(timeout, cancelled)
            with self._lock:
                if not bridge.alive:  # it exited right after its hello
                    self._state, self._error = RayState.DOWN, "the Ray driver exited"
                    raise RayUnavailable(self._explain(self._error))
                self._bridge, self._state = bridge, RayState.UP
            _log.info("connected to the Ray cluster at %s (%d nodes)", self.address, self._nodes)
            return bridge

    def _start(self, timeout: float, cancelled: Callable[[], bool]) -> _Bridge:
        # Called with _connect_lock held. Starts the bridge and waits for its first answer.
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "actors._ray_bridge",
                    self.address,
                    self.namespace,
                    repr(self.cpus_per_worker),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        except OSError as error:  # EAGAIN, ENOMEM: the host's, and maybe passing
            raise self._down(f"cannot start the Ray bridge: {error}") from None
        assert process.stdin is not None and process.stdout is not None
        bridge = _Bridge(process, process.stdin)
        hello: Future[Any] = Future()
        reader = threading.Thread(
            target=self._read, args=(bridge, process.stdout, hello), name="actord:ray-link"
        )
        bridge.reader = reader
        try:
            reader.start()
        except RuntimeError as error:  # can't start new thread
            process.kill()
            _reap(process)
            raise self._down(f"cannot start the link's thread: {error}") from None
        kind, value = "down", f"no answer within {timeout:.0f}s"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not cancelled():
            try:
                _, kind, value, _ = hello.result(_SLICE)
                break
            except FutureTimeout:
                continue
            except (EOFError, ValueError):
                kind, value = "down", "the Ray driver exited before it connected"
                break
        if kind != "ok":
            if cancelled():
                value = "stopping"
            with contextlib.suppress(OSError):
                process.kill()  # still connecting: nothing of Ray's to shut down yet
            self._end(bridge)
            raise self._down(str(value))
        self._nodes = int(value)
        return bridge

    def _down(self, why: str) -> RayUnavailable:
        # A connection failed: down until the host's next try (no sooner than _RETRY_AFTER).
        with self._lock:
            self._state, self._error = RayState.DOWN, why
            self._retry_at = time.monotonic() + _RETRY_AFTER
        _log.warning("%s", self._explain(why))
        return RayUnavailable(self._explain(why))

    def _read(self, bridge: _Bridge, stdout: IO[bytes], hello: Future[Any]) -> None:
        # The link's reader thread: answers in, futures resolved; at the end, every call
        # still pending fails with RayUnavailable and the link is marked down.
        try:
            hello.set_result(read_frame(stdout))
            while True:
                request_id, kind, value, cpu = read_frame(stdout)
                with self._lock:
                    future = bridge.pending.pop(request_id, None)
                    slot = bridge.slots.pop(request_id, None)
                    if slot is not None:  # whether its Ray worker answered, as last heard
                        if kind == "died":
                            self._live.discard(slot)
                        else:
                            self._live.add(slot)
                if future is not None:
                    future.set_result(RemoteReply(kind, value, float(cpu)))
        except (EOFError, OSError, ValueError) as error:
            if not hello.done():
                hello.set_exception(EOFError(str(error)))
        finally:
            stdout.close()
            _reap(bridge.process)
            with self._lock:
                pending = list(bridge.pending.values())
                bridge.pending.clear()
                bridge.slots.clear()
                self._live.clear()
                bridge.alive = False
                if self._bridge is bridge:
                    self._bridge, self._state = None, RayState.DOWN
                    self._error = "the Ray driver lost the cluster and exited"
                    self._retry_at = 0.0  # the host's next look reconnects
                    if self._closed:
                        _log.info("the Ray bridge has exited (the link is closing)")
                    else:
                        _log.warning(
                            "the Ray bridge exited: the Ray pools are down until the"
                            " host reconnects (it tries every few seconds)"
                        )
            for future in pending:
                future.set_exception(RayUnavailable(self._explain("the bridge exited")))


def _reap(process: subprocess.Popen[bytes]) -> None:
    # The bridge exits once its stdin closes (or has exited): give it the time to shut Ray
    # down (its actors end with it), then kill it.
    try:
        process.wait(_CLOSE_GRACE)
    except subprocess.TimeoutExpired:
        _log.warning("the Ray bridge did not exit within %.0fs: killed", _CLOSE_GRACE)
        process.kill()
        process.wait()
