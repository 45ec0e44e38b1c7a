"""Supervision: one-for-one restarts with exponential backoff and a restart-intensity limit.

The supervisor only decides; the actor's receive loop carries the decision out. It reads time
from a `Clock`, so tests drive backoff and intensity with a fake clock instead of sleeping.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

from .clock import Clock, SystemClock
from .errors import InvalidArgument

__all__ = ["Decision", "Escalation", "RestartPolicy", "Supervisor"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """More than `max_restarts` failures within `period` seconds escalates.

    The n-th failure inside the window waits `backoff_initial * backoff_factor**(n-1)` seconds,
    capped at `backoff_max`, before the actor is restarted.

    `refuse_restart`, when set, is why an operator's restart of the actor is refused (its
    state is its task's: a fresh instance could not take up the task where it is).
    """

    max_restarts: int = 5
    period: float = 60.0
    backoff_initial: float = 0.05
    backoff_max: float = 5.0
    backoff_factor: float = 2.0
    refuse_restart: str = ""

    def __post_init__(self) -> None:
        # Written as "not (valid)" so that NaN, which fails every comparison, is refused too.
        if not self.max_restarts >= 0:
            raise InvalidArgument(f"max_restarts must be >= 0, got {self.max_restarts}")
        if not self.period > 0:
            raise InvalidArgument(f"period must be > 0, got {self.period}")
        if not 0 <= self.backoff_initial <= self.backoff_max:
            raise InvalidArgument("need 0 <= backoff_initial <= backoff_max")
        if not self.backoff_factor >= 1:
            raise InvalidArgument(f"backoff_factor must be >= 1, got {self.backoff_factor}")


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a failure: restart after `delay` seconds, or escalate."""

    escalate: bool
    delay: float
    failures_in_period: int


@dataclass(frozen=True, slots=True)
class Escalation:
    """Handed to the system's escalation callback when an actor exceeds its restart intensity."""

    actor: str
    error: BaseException
    failures_in_period: int
    period: float


class Supervisor:
    """Restart bookkeeping for one actor or pool (its members share the intensity budget)."""

    def __init__(self, policy: RestartPolicy, clock: Clock | None = None) -> None:
        self.policy = policy
        self._clock = clock or SystemClock()
        # _lock guards _failures and restarts: pool members fail on their own threads.
        self._lock = threading.Lock()
        self._failures: deque[float] = deque()  # failure times inside the sliding window
        self.restarts = 0  # restarts granted since creation

    def record_failure(self) -> Decision:
        """Register a failure now and decide. Thread-safe."""
        policy = self.policy
        with self._lock:
            now = self._clock.monotonic()
            self._failures.append(now)
            while self._failures and self._failures[0] <= now - policy.period:
                self._failures.popleft()
            count = len(self._failures)
            if count > policy.max_restarts:
                return Decision(escalate=True, delay=0.0, failures_in_period=count)
            try:
                growth = policy.backoff_factor ** (count - 1)
            except OverflowError:  # a thousand failures in one window: capped all the same
                growth = math.inf
            delay = (
                min(policy.backoff_max, policy.backoff_initial * growth)
                if policy.backoff_initial > 0
                else 0.0
            )
            self.restarts += 1
            return Decision(escalate=False, delay=delay, failures_in_period=count)
