"""Stop tokens: how a stop reaches an actor thread wherever the runtime has it blocked.

An actor thread can block inside the runtime in three places: a send waiting for room in a
full mailbox, an ask waiting for its reply, a receive waiting on a mailbox. Each of those
waits arms the calling thread's token with a wake-up; `trip()` sets the token and fires the
wake-up, and the wait ends with `ActorStopping`, which the receive loop treats as a stop,
not as a failure. Threads that are not actors have no token and are never interrupted.

While an actor runs its final hooks (`on_stop`, `on_failure`) its token is `final`: what it
sends then and cannot be delivered (the channel closed, or a full mailbox while stopping)
becomes a dead letter instead of an exception, so a hook's cleanup runs to its end.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Final

from .errors import ActorStopping

__all__ = ["StopToken", "bind", "current", "in_final_hook"]


class StopToken:
    """One actor thread's stop flag and the wake-up of the wait it is blocked in, if any."""

    __slots__ = ("_lock", "_wake", "final", "owner", "stopping")

    def __init__(self, owner: str) -> None:
        self.owner = owner
        # _lock guards stopping and _wake together: a wait arms only while not stopping, and
        # a trip sees either the armed wake-up or a wait that will see `stopping` first.
        self._lock = threading.Lock()
        self._wake: Callable[[], None] | None = None
        self.stopping = False  # set once by trip(); never cleared
        self.final = False  # the thread is inside on_stop / on_failure (its own thread writes)

    def arm(self, wake: Callable[[], None]) -> None:
        """Before blocking: `wake` ends the wait. Raises `ActorStopping` if already tripped."""
        with self._lock:
            if self.stopping:
                raise ActorStopping(f"{self.owner} is stopping")
            self._wake = wake

    def disarm(self) -> None:
        """After the wait, however it ended."""
        with self._lock:
            self._wake = None

    def check(self) -> None:
        """Raise `ActorStopping` if the token has been tripped."""
        if self.stopping:
            raise ActorStopping(f"{self.owner} is stopping")

    def trip(self) -> None:
        """Any thread: mark the actor stopping and end the wait it is blocked in."""
        with self._lock:
            self.stopping = True
            wake, self._wake = self._wake, None
        if wake is not None:
            wake()  # outside our lock: the wake-up takes the lock of what it waits on


class _Local(threading.local):
    token: StopToken | None = None  # the default on a thread that is not an actor's


# One slot per thread: the token of the actor running on it, if any.
_local: Final = _Local()


def bind(token: StopToken | None) -> None:
    """Declare the calling thread's token (None to unbind)."""
    _local.token = token


#: The calling thread's token, or None on a thread that is not an actor's: a C-level call
#: (no Python frame), made by every blocking wait of the runtime.
current: Final[Callable[[], StopToken | None]] = functools.partial(getattr, _local, "token")


def in_final_hook() -> bool:
    """True on an actor thread running `on_stop` or `on_failure`."""
    token = _local.token
    return token is not None and token.final
