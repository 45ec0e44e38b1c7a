"""Per-actor statistics kept by the runtime, read as frozen snapshots without stopping the actor.

Durations go into log2 buckets of nanoseconds (bucket i holds values below 2**i ns): updating
one is an index and an increment, cheap enough to do for every message.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from .message import MessageType

__all__ = ["ActorState", "ActorStats", "Histogram"]

_BUCKETS = 65  # int.bit_length() of a non-negative int64 is at most 64


class ActorState(Enum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"  # waiting out a backoff after a failure
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"  # escalated: restart intensity exceeded


class _Counters:
    """Mutable counters. Written only by the actor's own thread; any thread may read them."""

    __slots__ = (
        "busy_since_ns",
        "by_type",
        "cpu_at_exit",
        "errors",
        "handle_hist",
        "handle_ns",
        "native_thread_id",
        "restarts",
        "state",
        "wait_hist",
        "wait_ns",
    )

    def __init__(self) -> None:
        self.by_type = [0] * (max(MessageType) + 1)  # indexed by MessageType
        self.errors = 0
        self.restarts = 0
        self.handle_ns = 0
        self.handle_hist = [0] * _BUCKETS
        self.wait_ns = 0
        self.wait_hist = [0] * _BUCKETS
        self.native_thread_id = 0
        self.state = ActorState.STARTING
        self.busy_since_ns = 0  # monotonic_ns when the current message started; 0 when idle
        self.cpu_at_exit = (0.0, 0.0)  # the thread's own (user, system) CPU, set as it exits

    def add(self, other: _Counters) -> None:
        """Add `other`'s totals to these (for the retired members of a role)."""
        for i, n in enumerate(other.by_type):
            self.by_type[i] += n
        self.errors += other.errors
        self.restarts += other.restarts
        self.handle_ns += other.handle_ns
        self.wait_ns += other.wait_ns
        for i in range(_BUCKETS):
            self.handle_hist[i] += other.handle_hist[i]
            self.wait_hist[i] += other.wait_hist[i]
        user, system = self.cpu_at_exit
        self.cpu_at_exit = (user + other.cpu_at_exit[0], system + other.cpu_at_exit[1])


@dataclass(frozen=True, slots=True)
class Histogram:
    """Durations in seconds: `counts[i]` values fell at or below `bounds[i]` (not cumulative)."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    count: int

    @classmethod
    def _from_log2(cls, buckets: list[int], total_ns: int) -> Histogram:
        counts = tuple(buckets)  # one copy: the owner thread may keep incrementing the list
        return cls(
            bounds=tuple(2.0**i / 1e9 for i in range(_BUCKETS)),
            counts=counts,
            sum=total_ns / 1e9,
            count=sum(counts),
        )

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (0 when empty)."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        if self.count == 0:
            return 0.0
        rank = q * self.count
        seen = 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            seen += n
            if n and seen >= rank:
                return bound
        return self.bounds[-1]

    def cumulative(self, bounds: tuple[float, ...]) -> tuple[int, ...]:
        """Counts at or below each of `bounds` (for exporting with coarser buckets)."""
        result = []
        for limit in bounds:
            result.append(
                sum(n for b, n in zip(self.bounds, self.counts, strict=True) if b <= limit)
            )
        return tuple(result)


@dataclass(frozen=True, slots=True)
class ActorStats:
    """A snapshot of one actor (one pool member) taken without stopping it."""

    name: str  # the member: "parser#2" in a pool, the actor's name otherwise
    pool: str  # the mailbox it serves (the name others send to)
    state: ActorState
    processed: Mapping[MessageType, int]
    errors: int
    restarts: int
    handle_time: Histogram
    queue_wait: Histogram
    mailbox_depth: int
    mailbox_capacity: int
    native_thread_id: int
    busy_seconds: float  # time spent so far on the message in hand; 0 when idle
    # For short-lived actors (a job's reader): the name they are counted under in metrics,
    # so that labels stay bounded; None for everyone else.
    role: str | None = None
    cpu_at_exit: tuple[float, float] = (0.0, 0.0)  # (user, system), for retired totals only
    commands: frozenset[str] = frozenset()  # the admin commands it accepts (`Actor.commands`)
    # An async actor holding its event loop now without awaiting (a blocking call inside
    # `async def handle`): how long the loop has been held past its heartbeat; 0 otherwise.
    loop_blocked_seconds: float = 0.0

    @property
    def processed_total(self) -> int:
        return sum(self.processed.values())

    @classmethod
    def _capture(
        cls,
        name: str,
        pool: str,
        counters: _Counters,
        depth: int,
        capacity: int,
        role: str | None = None,
        commands: frozenset[str] = frozenset(),
        loop_blocked: float = 0.0,
    ) -> ActorStats:
        busy_since = counters.busy_since_ns
        busy = (time.monotonic_ns() - busy_since) / 1e9 if busy_since else 0.0
        by_type = counters.by_type
        return cls(
            name=name,
            pool=pool,
            state=counters.state,
            processed=MappingProxyType({t: by_type[t] for t in MessageType}),
            errors=counters.errors,
            restarts=counters.restarts,
            handle_time=Histogram._from_log2(counters.handle_hist, counters.handle_ns),
            queue_wait=Histogram._from_log2(counters.wait_hist, counters.wait_ns),
            mailbox_depth=depth,
            mailbox_capacity=capacity,
            native_thread_id=counters.native_thread_id,
            busy_seconds=busy,
            role=role,
            cpu_at_exit=counters.cpu_at_exit,
            commands=commands,
            loop_blocked_seconds=loop_blocked,
        )
