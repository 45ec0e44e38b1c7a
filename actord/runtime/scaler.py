"""Pool resizes off the caller's thread, in steps the host can take.

`PoolScaler.request` checks a resize (the pool, the configured maximum) and answers at once
with what will happen (`ScalePlan`); its own thread does it. A shrink is done at once
(retiring members is cheap). A growth starts `step` members at a time (the cores, by
default) and takes the next step only once those have started, that is answered a ping,
which their receive loop does after `on_start`: a member whose start is heavy (a parse
worker process: an interpreter and its imports) never has hundreds of siblings starting
with it, so the host, and the control plane on it, stay responsive. The latest size asked
for a pool wins: a request while one is under way changes its target.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Final

from .errors import ActordError, InvalidArgument
from .stats import ActorState
from .system import ActorSystem

__all__ = ["PoolScaler", "ScalePlan"]

_log: Final = logging.getLogger("actord.system")
_IDLE_WAIT: Final = 5.0  # seconds the idle thread waits between looks at its stop flag


@dataclass(frozen=True, slots=True)
class ScalePlan:
    """What a resize will do: `pool` goes from `current` members to `size`, growing `step`
    at a time."""

    pool: str
    size: int
    current: int
    step: int

    def to_wire(self) -> dict[str, Any]:
        return {"pool": self.pool, "size": self.size, "from": self.current, "step": self.step}


class PoolScaler:
    """Resizes `system`'s pools on a named, non-daemon thread (``actord-scaler``)."""

    def __init__(
        self,
        system: ActorSystem,
        *,
        max_size: int,
        step: int | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self._system = system
        self.max_size = max_size  # replaced whole by a reload; read by request()
        self.cores = os.cpu_count() or 1
        self.step = step or self.cores
        self.start_timeout = start_timeout  # how long one step waits for a member's start
        # _cond guards _targets (pool -> the size last asked, until reached), _stepping (the
        # pool a step is under way on) and _stopping; notified by request, cancel and stop
        # (to the thread) and by the thread (to `settled` and `cancel`).
        self._cond = threading.Condition()
        self._targets: dict[str, int] = {}
        self._stepping: str | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="actord-scaler", daemon=False)

    def start(self) -> None:
        self._thread.start()

    def request(self, pool: str, size: int) -> ScalePlan:
        """Resize `pool` to `size` members (done on the scaler's thread). Raises
        `UnknownActor` for no such pool, `InvalidArgument` for a single actor or a size
        outside 1 to `max_size`."""
        if not 1 <= size <= self.max_size:
            raise InvalidArgument(
                f"size: must be between 1 and {self.max_size} (daemon.max_pool_size), got {size}"
            )
        current = self._system.size(pool)
        if size > self.cores and size > current:
            _log.warning(
                "pool %s grows to %d members on %d cores: members past the cores add no "
                "compute here (only waiting or remote work gains); started %d at a time",
                pool,
                size,
                self.cores,
                self.step,
            )
        with self._cond:
            if self._stopping:
                raise InvalidArgument("the daemon is stopping: no resize now")
            self._targets[pool] = size
            self._cond.notify_all()
        return ScalePlan(pool, size, current, self.step)

    def cancel(self, pool: str, timeout: float) -> bool:
        """Drop what was asked of `pool` and wait (up to `timeout`) for a step under way on it
        to end: whoever resizes it next (a reload) is not undone by a later step. True if no
        step is under way on it now."""
        with self._cond:
            self._targets.pop(pool, None)
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._stepping != pool, timeout)

    def pending(self) -> tuple[str, ...]:
        """The pools a resize is asked of or under way on."""
        with self._cond:
            stepping = () if self._stepping is None else (self._stepping,)
            return tuple(dict.fromkeys((*self._targets, *stepping)))

    def settled(self, timeout: float) -> bool:
        """Wait until every resize asked for is done (or `timeout`); True if none is left."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._targets, timeout)

    def close(self) -> None:
        """Take no more requests, and take no further step."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def stop(self, timeout: float) -> None:
        """`close`, and join the thread: it ends after the step under way (one that waits
        for members to start ends as soon as the system stops them)."""
        self.close()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._targets and not self._stopping:
                    self._cond.wait(_IDLE_WAIT)
                if self._stopping:
                    return
                pool, target = next(iter(self._targets.items()))
                self._stepping = pool
            try:
                done = self._step(pool, target)
            finally:
                with self._cond:
                    self._stepping = None
                    self._cond.notify_all()
            with self._cond:
                if done and self._targets.get(pool) == target:
                    del self._targets[pool]
                    self._cond.notify_all()

    def _step(self, pool: str, target: int) -> bool:
        """One step toward `target`; True once it is reached (or can no longer be)."""
        try:
            current = self._system.size(pool)
            size = target if target <= current else min(target, current + self.step)
            self._system.resize(pool, size)
            if size > current:
                self._await_started(pool)
                _log.info("pool %s: %d of %d members started", pool, size, target)
        except ActordError as error:  # the pool or the system is stopping
            _log.warning("pool %s: resize to %d abandoned: %s", pool, target, error)
            return True
        except RuntimeError as error:  # "can't start new thread": the host's limit
            _log.error("pool %s: resize to %d abandoned: %s", pool, target, error)
            return True
        return size == target

    def _await_started(self, pool: str) -> None:
        for stats in self._system.stats():
            if stats.pool != pool or stats.state is not ActorState.STARTING:
                continue
            try:
                self._system.ping(stats.name, timeout=self.start_timeout)
            except ActordError as error:  # it failed to start, or left: the next step goes on
                _log.info("pool %s: member %s did not start: %s", pool, stats.name, error)
