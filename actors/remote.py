"""The Ray executor: pool members that stay actord actors and drive one Ray actor each.

A member takes units from its pool's mailbox like any member (same supervision, stats and
metrics) and sends each to its Ray actor through the link (`ray_link.py`), keeping up to
`depth` in flight so that the round trip to the cluster is hidden behind the work. Each
answer wakes the member with a note in its own lane (`Actor.tell_self`), so a unit's end is
handled at once even when nothing else is queued for the pool.

A unit whose Ray actor or node is lost is sent again (a fresh actor is placed on a live node),
up to `max_retries` times, and counted; a unit that runs past the unit timeout has its actor
killed and is handed back to its reader, which retries it once (a runaway user pattern);
a cluster that cannot be reached fails the unit's job with `unavailable`.

`RayHost` owns the link's lifetime: its `on_stop` closes the link (the daemon's release has
already told the bridge to exit, after stopping the pools), so no Ray actor outlives the
daemon.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np

from actord import Actor, Message

from .fft import write_chunk
from .model import (
    BlockFailed,
    ChunkWritten,
    Engine,
    FFTChunk,
    InputSlice,
    LogBlock,
    ParsedBlock,
    SyntheticSource,
)
from .ray_link import RayLink, RayUnavailable, RemoteCounters, RemoteReply
from .reader import ChunkFailed
from .remote_work import DATA, GONE, IO, OK

__all__ = ["RayHost", "RemoteFFTWorker", "RemoteParser"]

_log: Final = logging.getLogger("actord.ray")
_POLL: Final = 0.25  # how often a member waiting on the cluster checks for a stop or a job's end
_CONNECT: Final = 30.0  # seconds a first call may wait for the connection to the cluster
_PROBE_EVERY: Final = 5.0  # seconds between the host's looks at the cluster (nodes, actors)

Unit = FFTChunk | LogBlock


@dataclass(slots=True)
class _InFlight:
    unit: Unit
    future: Future[RemoteReply]
    deadline: float
    retries: int = 0


@dataclass(frozen=True, slots=True)
class _Landed:
    """A member's note to itself, from the link's thread: an answer came, or a unit's
    deadline passed. It wakes the member even when no unit waits in its pool."""


_LANDED = _Landed()


class _RemoteMember(Actor):
    """What the FFT and parse members share: the window of units in flight and the failure
    policy. Subclasses say what a unit's call is and what its answer means."""

    method: ClassVar[str]

    def __init__(
        self,
        link: RayLink,
        *,
        depth: int = 6,
        unit_timeout: float = 60.0,
        max_retries: int = 3,
    ) -> None:
        self.link = link
        self.depth = depth  # units kept in flight at most (the job's window bounds them too)
        self.unit_timeout = unit_timeout  # from when a unit is the oldest in flight
        self.max_retries = max_retries  # sends of one unit after its Ray worker was lost
        self._in_flight: deque[_InFlight] = deque()
        self._finishing: _InFlight | None = None  # taken off the window, its end not yet sent
        self._counters = RemoteCounters()
        self._running = False  # between on_start and on_stop: notes to itself are worth it

    def on_start(self) -> None:
        """Actor thread: this member's remote figures (kept across restarts)."""
        self._counters = self.link.counters_for(self.member)
        self._counters.in_flight = 0
        self._running = True

    def handle(self, message: Message) -> None:
        """Actor thread: send a unit (waiting for the oldest while `depth` are in flight),
        or finish the units whose answers have landed."""
        payload = message.payload
        if not isinstance(payload, _Landed) and not payload.ended:
            while len(self._in_flight) >= self.depth:
                if not self._finish_oldest(wait=True):
                    return  # stopping: what is in flight is abandoned (its job runs again)
            self._send(payload, retries=0)
        while self._in_flight and self._finish_oldest(wait=False):
            pass

    def _wake(self, *_: object) -> None:
        # The link's reader thread (an answer) or the timer thread (a deadline).
        if self._running:
            self.tell_self(_LANDED)

    def _send(self, unit: Unit, retries: int) -> None:
        try:
            future = self.link.call(
                self.member, self.method, self._args(unit), _CONNECT, self._stopping
            )
        except RayUnavailable as error:
            self._unavailable(unit, str(error))
            return
        entry = _InFlight(unit, future, 0.0, retries)
        self._in_flight.append(entry)
        self._counters.in_flight = len(self._in_flight)
        if len(self._in_flight) == 1:
            self._start_clock(entry)
        future.add_done_callback(self._wake)

    def _start_clock(self, entry: _InFlight) -> None:
        # A Ray actor runs its calls one at a time: a unit's time counts once it is oldest.
        entry.deadline = time.monotonic() + self.unit_timeout
        self._channel.timers.call_later(self.unit_timeout + _POLL, self._wake)

    def _stopping(self) -> bool:
        return self.stop_requested

    def _finish_oldest(self, *, wait: bool) -> bool:
        # The oldest unit's answer, waited for in short slices if `wait` (a stop, its job's
        # end, its deadline). False if it has not landed (or the member is stopping).
        entry = self._in_flight[0]
        unit = entry.unit
        while True:
            try:
                reply = entry.future.result(_POLL if wait else 0)
                break
            except FutureTimeout:
                if unit.ended:
                    self._abandon(entry)
                    return True
                if time.monotonic() >= entry.deadline:
                    self._timed_out(entry)
                    return True
                if not wait or self.stop_requested:
                    return False
            except RayUnavailable as error:
                self._done(entry)
                self._unavailable(unit, str(error))
                return True
        self._done(entry)
        self._finishing = entry
        self._counters.cpu_seconds += reply.cpu_seconds
        if unit.ended:
            pass  # its job ended meanwhile: its reader and writer are gone
        elif reply.kind == "died":
            self._lost(entry, reply.value)
        elif reply.kind == "error":  # the call raised: the reader retries the unit once
            self.send(unit.reader, BlockFailed(unit, f"on the Ray worker: {reply.value}"))
        else:
            self._counters.units += 1
            self._finished(unit, reply)
        self._finishing = None
        return True

    def _done(self, entry: _InFlight) -> None:
        self._in_flight.remove(entry)
        self._counters.in_flight = len(self._in_flight)
        if self._in_flight and self._in_flight[0].deadline == 0.0:
            self._start_clock(self._in_flight[0])

    def _abandon(self, entry: _InFlight) -> None:
        # Its job ended: the answer is not worth waiting for. A user's pattern may still
        # run on: its Ray actor is killed as a local worker would be, unless units of live
        # jobs are queued on it too (they would be lost with it).
        self._done(entry)
        if isinstance(entry.unit, LogBlock) and all(e.unit.ended for e in self._in_flight):
            self.link.drop(self.member)

    def _timed_out(self, entry: _InFlight) -> None:
        self._done(entry)
        self.link.drop(self.member)
        self._counters.failures += 1
        error = f"no answer from its Ray worker within {self.unit_timeout:.0f}s; worker killed"
        self.send(entry.unit.reader, BlockFailed(entry.unit, error))

    def _lost(self, entry: _InFlight, why: str) -> None:
        # Its Ray actor or node was lost: another actor (placed on a live node) gets it.
        self._counters.failures += 1
        unit = entry.unit
        if entry.retries >= self.max_retries:
            self._unavailable(unit, f"its Ray worker was lost {entry.retries + 1} times: {why}")
            return
        _log.warning("%s: Ray worker lost (%s): sending the unit again", self.member, why)
        self._counters.retries += 1
        self._send(unit, entry.retries + 1)

    def _unavailable(self, unit: Unit, error: str) -> None:
        # The cluster cannot be reached: the job fails (a retry would fail the same way).
        if not unit.ended:
            self.send(unit.reader, ChunkFailed(unit, f"unavailable: {error}"))

    def on_stop(self) -> None:
        """Actor thread: units in flight are abandoned (their jobs are re-queued)."""
        self._running = False
        self._in_flight.clear()
        self._counters.in_flight = 0

    def on_failure(self, error: Exception, message: Message | None) -> None:
        """Actor thread: hand every unit in flight back to its reader (it retries once)."""
        units = [entry.unit for entry in self._in_flight]
        if self._finishing is not None:
            units.append(self._finishing.unit)
        failed = None if message is None else message.payload
        if isinstance(failed, FFTChunk | LogBlock) and all(u is not failed for u in units):
            units.append(failed)
        self.on_stop()
        for unit in units:
            if not unit.ended:
                self.send(unit.reader, BlockFailed(unit, repr(error)))

    # -- what a subclass says ----------------------------------------------------------------

    def _args(self, unit: Any) -> list[Any]:
        raise NotImplementedError

    def _finished(self, unit: Any, reply: RemoteReply) -> None:
        raise NotImplementedError


class RemoteFFTWorker(_RemoteMember):
    """FFT pool member on Ray. A chunk whose input and output lie under a shared root is
    read and written by the Ray worker itself (only offsets cross the network); any other
    goes through Ray's object store and is written here, as a local worker would."""

    method = "fft"

    def __init__(self, link: RayLink, engine: Engine, *, unit_timeout: float = 60.0) -> None:
        super().__init__(link, unit_timeout=unit_timeout)
        self.engine = engine  # the daemon's fft.engine: Ray workers compute as local ones

    def _args(self, unit: Any) -> list[Any]:
        chunk: FFTChunk = unit
        layout = chunk.layout
        data = chunk.data
        if isinstance(data, SyntheticSource):
            source: list[Any] = ["synthetic", data.seed, data.index, list(data.shape)]
        elif isinstance(data, InputSlice):
            roots = None if data.roots is None else list(data.roots)
            source = ["file", data.path, data.offset, data.dtype, list(data.shape), roots]
        else:
            array = np.ascontiguousarray(data)
            source = ["bytes", array.data.cast("B"), array.dtype.str, list(array.shape)]
            self._counters.moved_bytes += array.nbytes
        if chunk.remote_output:
            target: list[Any] = [
                "file",
                layout.path,
                layout.position(chunk.index),
                layout.chunk_bytes,
                None if layout.roots is None else list(layout.roots),
            ]
        else:
            target = ["return", layout.chunk_bytes]
        return [source, chunk.transform.value, chunk.dtype, target, self.engine.value]

    def _finished(self, unit: Any, reply: RemoteReply) -> None:
        chunk: FFTChunk = unit
        layout = chunk.layout
        if reply.kind == GONE:
            self.send(chunk.reader, ChunkFailed(chunk, "its output file was removed"))
            return
        if reply.kind in (DATA, IO):
            self.send(chunk.reader, ChunkFailed(chunk, str(reply.value)))
            return
        assert reply.kind == OK
        if not chunk.remote_output:
            self._counters.moved_bytes += len(reply.value)
            try:
                result = np.frombuffer(reply.value, np.uint8)
                write_chunk(layout.path, layout.position(chunk.index), result, layout.roots)
            except OSError as error:  # a full disk, the file removed: the job's, not ours
                self.send(chunk.reader, ChunkFailed(chunk, f"writing the output failed: {error}"))
                return
        self.send(chunk.writer, ChunkWritten(chunk.job, chunk.index, layout.chunk_bytes))


class RemoteParser(_RemoteMember):
    """Parser pool member on Ray: the block's bytes go with the call, its records come back."""

    method = "parse"

    def _args(self, unit: Any) -> list[Any]:
        block: LogBlock = unit
        self._counters.moved_bytes += len(block.data)
        return [block.data, block.first_line, block.pattern]

    def _finished(self, unit: Any, reply: RemoteReply) -> None:
        block: LogBlock = unit
        fields = dict(reply.value)
        self._counters.moved_bytes += len(fields["records"]) + len(fields["rejects"])
        fields["levels"] = tuple((str(k), int(v)) for k, v in fields["levels"])
        self.send(
            block.writer,
            ParsedBlock(job=block.job, index=block.index, nbytes=len(block.data), **fields),
        )


@dataclass(frozen=True, slots=True)
class _Probe:
    """The host's note to itself: look at the cluster (and reconnect if it was down)."""


class RayHost(Actor):
    """Owns the Ray link: connects at start (in the background of the daemon's start),
    looks at the cluster every few seconds (reconnecting once it is back), and closes the
    link when stopped. The daemon's release has told the bridge to exit by then (`shut`),
    after stopping the pools; a member still sending meets a closed link and gives up."""

    def __init__(self, link: RayLink) -> None:
        self.link = link

    def on_start(self) -> None:
        """Actor thread: the first look now, then every `_PROBE_EVERY` seconds."""
        self.send(self.name, _Probe())
        self.schedule(_PROBE_EVERY, _Probe(), interval=_PROBE_EVERY)

    def handle(self, message: Message) -> None:
        """Actor thread: refresh the cluster's figures (connecting if need be)."""
        if isinstance(message.payload, _Probe):
            try:
                self.link.check(_CONNECT, lambda: self.stop_requested, reconnect=True)
            except RayUnavailable as error:
                _log.debug("%s", error)
                return
            self.link.probe(timeout=2.0)

    def on_stop(self) -> None:
        """Actor thread: end the bridge; the Ray actors it made end with it."""
        self.link.close()
