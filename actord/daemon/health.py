"""The monitor actor: samples every actor's statistics and its thread's CPU time at an interval,
publishes the sample as an EVENT, and flags an actor stuck in one message too long.

CPU times come from psutil's per-thread figures matched by native thread id: each actor's own
CPU, not the process's (the seed reported the whole process's CPU for every thread).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import psutil

from .. import Actor, ActorState, ActorSystem, Message, Timer

__all__ = ["ActorSample", "GetSample", "Monitor", "MonitorSample", "thread_cpu_times"]

_log: Final = logging.getLogger("actord.health")


@dataclass(frozen=True, slots=True)
class ActorSample:
    name: str
    pool: str
    state: ActorState
    processed: int
    errors: int
    restarts: int
    mailbox_depth: int
    mailbox_capacity: int
    native_thread_id: int
    cpu_user: float  # seconds of CPU this actor's thread has used, in user mode
    cpu_system: float
    busy_seconds: float  # on the message in hand
    stuck: bool


@dataclass(frozen=True, slots=True)
class MonitorSample:
    actors: tuple[ActorSample, ...]
    stuck: tuple[str, ...]  # members busy on one message longer than the threshold

    @property
    def healthy(self) -> bool:
        """No actor stuck and none failed: what the systemd watchdog will check."""
        return not self.stuck and all(a.state is not ActorState.FAILED for a in self.actors)


@dataclass(frozen=True, slots=True)
class GetSample:
    """Ask the monitor for a sample taken now."""


@dataclass(frozen=True, slots=True)
class SetStuckAfter:
    """A reload: from now on an actor on one message longer than `seconds` is stuck. The
    monitor answers with the threshold it now applies."""

    seconds: float


@dataclass(frozen=True, slots=True)
class _Tick:
    pass


_TICK = _Tick()


def thread_cpu_times() -> dict[int, tuple[float, float]]:
    """(user, system) CPU seconds for every thread of this process, by native thread id."""
    return {t.id: (t.user_time, t.system_time) for t in psutil.Process().threads()}


class Monitor(Actor):
    """Publishes a `MonitorSample` every `interval` seconds; answers `GetSample` requests."""

    def __init__(
        self,
        system: ActorSystem,
        *,
        interval: float = 1.0,
        stuck_after: float = 30.0,
        blocked_after: float = 1.0,
        on_healthy: Callable[[], object] | None = None,
        on_sample: Callable[[MonitorSample], object] | None = None,
    ):
        self.system = system
        self.interval = interval
        self.stuck_after = stuck_after
        # An async actor holding the system's event loop (a blocking call in `async def`)
        # for this long is stuck too: every other async actor waits for it.
        self.blocked_after = blocked_after
        self.on_healthy = on_healthy  # the systemd watchdog ping: only while all are healthy
        self.on_sample = on_sample  # each tick's sample (the metrics server's /healthz)
        self.latest: MonitorSample | None = None
        self._timer: Timer | None = None
        self._flagged: set[str] = set()

    def on_start(self) -> None:
        """Actor thread: start the sampling tick (one timer, on the system's timer thread)."""
        self._timer = self.schedule(0.0, _TICK, interval=self.interval)

    def handle(self, message: Message) -> None:
        """Actor thread: sample on a tick; answer a request with a sample taken now."""
        if isinstance(message.payload, _Tick):
            self.latest = self.sample()
            self.publish(self.latest, timeout=0)
            if self.on_sample is not None:
                self.on_sample(self.latest)
            if self.on_healthy is not None and self.latest.healthy:
                self.on_healthy()
        elif isinstance(message.payload, GetSample):
            self.reply(message, self.sample())
        elif isinstance(message.payload, SetStuckAfter):
            self.stuck_after = message.payload.seconds
            self._flagged = set()  # flagged again, against the new threshold
            self.reply(message, self.stuck_after)

    def sample(self) -> MonitorSample:
        cpu = thread_cpu_times()
        actors = []
        blocking: set[str] = set()  # async actors holding the event loop
        for stats in self.system.stats():
            if stats.loop_blocked_seconds > self.blocked_after:
                blocking.add(stats.name)
            user, system = cpu.get(stats.native_thread_id, (0.0, 0.0))
            # The monitor is always busy while it samples: it never flags itself.
            stuck = (
                stats.busy_seconds > self.stuck_after
                or stats.loop_blocked_seconds > self.blocked_after
            ) and stats.name != self.member
            actors.append(
                ActorSample(
                    name=stats.name,
                    pool=stats.pool,
                    state=stats.state,
                    processed=stats.processed_total,
                    errors=stats.errors,
                    restarts=stats.restarts,
                    mailbox_depth=stats.mailbox_depth,
                    mailbox_capacity=stats.mailbox_capacity,
                    native_thread_id=stats.native_thread_id,
                    cpu_user=user,
                    cpu_system=system,
                    busy_seconds=stats.busy_seconds,
                    stuck=stuck,
                )
            )
        stuck_names = tuple(a.name for a in actors if a.stuck)
        for name in set(stuck_names) - self._flagged:
            if name in blocking:
                _log.warning("actor %s is blocking the event loop of the async actors", name)
            else:
                _log.warning(
                    "actor %s has been on one message for over %.0fs", name, self.stuck_after
                )
        self._flagged = set(stuck_names)
        return MonitorSample(tuple(actors), stuck_names)

    def on_stop(self) -> None:
        """Actor thread: no more ticks."""
        self._cancel_timer()

    def on_failure(self, error: Exception, message: Message | None) -> None:
        """Actor thread: the restarted instance starts its own tick; this one's must end."""
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
