"""ActorSystem: spawns actors and pools on one ThreadChannel, looks them up, stops them.

Actors are stopped in reverse start order: spawn consumers before producers and a graceful
stop drains a pipeline from its source down. Every thread is named, non-daemon and joined.

Once a stop has begun (of one actor, or of the system) nothing restarts or escalates, and
the system accepts no new actor. An actor that escalates ends as a stopped one does: what is
queued becomes dead letters, pending asks fail with `ActorDead` at once, its name is free.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from . import logctx
from .actor import Actor, ActorRef, _Cell, schedule_message
from .async_actor import BATCH as ASYNC_BATCH
from .async_actor import LoopHost, _AsyncCell, is_async_factory
from .channel import Inbox, ThreadChannel
from .clock import Clock, SystemClock
from .errors import (
    ActorDead,
    ActorStopping,
    InvalidArgument,
    NameTaken,
    StopTimeout,
    UnknownActor,
)
from .message import ControlKind, MessageType, Pong
from .stats import ActorState, ActorStats, _Counters
from .supervisor import Escalation, RestartPolicy, Supervisor
from .timers import Timer, TimerService

__all__ = ["ActorSystem"]

_log: Final = logging.getLogger("actord.system")
_POOL_BATCH: Final = 1  # pool members take one message at a time: whoever is free takes the next
_SINGLE_BATCH: Final = 64  # a lone consumer drains up to this many per lock round trip
_KILL_GRACE: Final = 1.0  # after a graceful deadline, how long an immediate stop may take
_CLOSE_GRACE: Final = 0.05  # an immediate stop: time for threads the channel's close woke


def _index(cell: _Cell) -> int:
    """A pool member's number (``pool#3``: 3); 0 for a single actor."""
    _, sep, number = cell.member.rpartition("#")
    return int(number) if sep else 0


class _Group:
    """The system's record of one actor or pool: its mailbox, members and supervisor."""

    def __init__(
        self,
        system: ActorSystem,
        name: str,
        factory: Callable[[], Actor],
        *,
        pooled: bool,
        policy: RestartPolicy,
        role: str | None = None,
    ) -> None:
        self.name = name
        self.pooled = pooled
        self.role = role  # counted under this name in metrics (short-lived actors)
        self._system = system
        self._factory = factory
        self.is_async = is_async_factory(factory)  # its members are tasks on the system's loop
        self.policy = policy
        self._supervisor = Supervisor(policy, system.clock)
        self.ref = ActorRef(name, system.channel, self)
        self._inbox = system.channel.inbox(name, "$group")  # our mailbox itself, not its name
        # _lock guards cells, _size, _live, _next_index, _leaving, _state and _finalized.
        self._lock = threading.Lock()
        self.cells: list[_Cell] = []  # every member started and not yet pruned
        self._size = 0  # members wanted: retiring ones are no longer counted
        self._live = 0  # member threads started and not yet exited
        self._next_index = 0
        self._leaving: set[str] = set()  # members asked to retire, until their thread leaves
        self._state = "running"  # running | failed | stopping | stopped
        self._finalized = False  # mailbox unregistered and the system has forgotten us

    def _stopping(self) -> bool:
        # Read by member threads after a failure: no restart once anything is stopping.
        return self._state != "running" or self._system.stopping

    @property
    def alive(self) -> bool:
        return self._state == "running"

    def _new_cell(self, index: int | None = None) -> _Cell:
        # Called with _lock held.
        if index is None:
            index = self._next_index
        self._next_index = max(self._next_index, index + 1)
        member = f"{self.name}#{index}" if self.pooled else self.name
        channel = self._system.channel
        cell: Callable[..., _Cell] = _Cell
        batch = _SINGLE_BATCH
        if self.is_async:
            host = self._system._aio  # started by the spawn, before any lock was taken
            assert host is not None
            cell = functools.partial(_AsyncCell, host=host)
            batch = ASYNC_BATCH
        return cell(
            inbox=channel.inbox(self.name, member),
            mailbox=self.name,
            member=member,
            channel=channel,
            factory=self._factory,
            ref=self.ref,
            supervisor=self._supervisor,
            clock=self._system.clock,
            batch=_POOL_BATCH if self.pooled else batch,
            stopping=self._stopping,
            on_escalate=self._escalated,
            on_exit=self._cell_exited,
        )

    def resize(self, size: int) -> None:
        """Grow by starting members, shrink by retiring members between messages."""
        if size < 1:
            raise InvalidArgument(f"pool size must be >= 1, got {size}")
        with self._lock:
            self._check_running()
            # A member's number is free once its thread has left: a growth takes the lowest
            # free ones, a shrink retires the highest-numbered members, so after any resizes
            # a pool of n is pool#0 to pool#n-1 again (names one can `send` to; metric labels
            # stay bounded).
            taken = {_index(c) for c in self.cells if not c.retired or c.thread.is_alive()}
            self.cells = [c for c in self.cells if not c.retired]
            self._leaving &= {c.member for c in self.cells}
            delta = size - self._size
            self._size = size
            free = (i for i in itertools.count() if i not in taken)
            started = [self._new_cell(next(free)) for _ in range(max(delta, 0))]
            self.cells.extend(started)
            self._live += len(started)
            # Started under the lock: a concurrent stop never sees a cell it cannot join.
            for cell in started:
                self._system._started(cell)
                cell.thread.start()
            staying = [c for c in self._members() if c.member not in self._leaving]
            leaving = sorted(staying, key=_index, reverse=True)[: max(-delta, 0)]
            for cell in leaving:
                self._leaving.add(cell.member)
                cell.control(ControlKind.RETIRE)
            # Into our own mailbox, under the lock: never a pool that reuses the name. Only
            # when fewer members serve than leave (some exited on a failure).
            for _ in range(max(-delta, 0) - len(leaving)):
                self._inbox.control(ControlKind.RETIRE, anyone=True)

    @property
    def size(self) -> int:
        """Members wanted (retiring ones no longer count)."""
        with self._lock:
            return self._size

    def _check_running(self) -> None:
        # Called with _lock held.
        if self._state != "running":
            if self._system.stopping:
                raise ActorStopping(f"the actor system is stopping: {self.name!r} is {self._state}")
            raise ActorDead(f"{self.name!r} is {self._state}")

    def restart(self, member: str | None = None) -> int:
        """Ask each member (or `member` alone) to replace its instance with a fresh one: a
        request addressed to that member, which it takes between messages (a busy one once
        it is free); nothing queued is lost."""
        with self._lock:
            self._check_running()
            members = [self._member(member)] if member else self._members()
        for cell in members:
            cell.control(ControlKind.RESTART)
        return len(members)

    def _members(self) -> list[_Cell]:
        # Called with _lock held: the members serving now (not leaving, not exited).
        return [c for c in self.cells if not c.retired and c.thread.is_alive()]

    def _member(self, member: str) -> _Cell:
        # Called with _lock held.
        members = self._members()
        for cell in members:
            if cell.member == member:
                return cell
        names = ", ".join(c.member for c in members) or "none"
        raise UnknownActor(f"no member {member!r} in pool {self.name!r} (members: {names})")

    def cell(self, member: str) -> _Cell:
        """The running member named `member` (``pool#i``)."""
        with self._lock:
            self._check_running()
            return self._member(member)

    def commands(self, member: str | None, timeout: float) -> frozenset[str]:
        """The admin commands `member` accepts, or that every member accepts (any member of
        a pool may take a command sent to the pool). A member's commands are known once its
        first instance is made: wait for that until `timeout`."""
        with self._lock:
            self._check_running()
            cells = [self._member(member)] if member else self._members()
        deadline = time.monotonic() + timeout
        known = [c.commands for c in cells if c.made.wait(max(0.0, deadline - time.monotonic()))]
        return frozenset.intersection(*known) if known else frozenset()

    def stats(self) -> tuple[ActorStats, ...]:
        # No lock: copying the list is one C call under the GIL, and a signal handler (the
        # SIGUSR1 dump) may ask on the main thread while it holds _lock in `resize`.
        return tuple(c.stats(self.role) for c in tuple(self.cells) if not c.retired)

    def _escalated(self, escalation: Escalation) -> None:
        # The failing member's thread: stop the whole pool now, then tell the system.
        with self._lock:
            if self._state != "running":
                return
            self._state = "failed"
            others = [c for c in self.cells if c.thread is not threading.current_thread()]
        self._inbox.close()
        self._stop_now(others)
        # Ended now, not when a member still inside handle() returns: queued messages and
        # pending asks fail at once, the name is free; that member's leftovers become dead
        # letters too (its inbox holds the old mailbox).
        self._finalize()
        self._system._escalated(escalation)

    @staticmethod
    def _stop_now(cells: list[_Cell]) -> None:
        for cell in cells:
            cell.interrupt()

    def _cell_exited(self, cell: _Cell) -> None:
        # The exiting member's own thread, as its last act.
        with self._lock:
            self._live -= 1
            last = self._live == 0 and self._state in ("stopping", "failed")
        if last:
            self._finalize()
        self._system._exited(cell)

    def _finalize(self) -> None:
        # Once per group: what is still queued becomes dead letters and the name is free again.
        with self._lock:
            if self._finalized:
                return
            self._finalized = True
            if self._state != "failed":
                self._state = "stopped"
            counters = [c.counters for c in self.cells]
        self._system._forget(self, self._inbox, counters)
        # Outside every lock: failing a pending ask runs its future's callbacks.
        self._inbox.discard()

    def stop(self, *, graceful: bool, timeout: float, wait: bool = True) -> None:
        """Stop the members (graceful: let them drain what is queued first) and, with
        `wait`, join them until `timeout` from now. Also for a group already stopping or
        failed: then it joins, and reports what is stuck, all the same."""
        deadline = time.monotonic() + timeout
        with self._lock:
            first = self._state == "running"
            if first:
                self._state = "stopping"
            cells = list(self.cells)
            exited = self._live == 0
        if first:
            self._inbox.close()
            for cell in cells:
                cell.end_backoff()
        if not graceful:  # also takes over from a graceful stop already under way
            self._stop_now(cells)
        if exited:
            self._finalize()
        me = threading.current_thread()
        if not wait or any(c.thread is me for c in cells):
            return  # the last member to exit finalizes; the system's stop joins the threads
        for cell in cells:
            cell.thread.join(max(0.0, deadline - time.monotonic()))
        if graceful and any(c.thread.is_alive() for c in cells):
            _log.warning("%s did not drain within %.1fs: stopping it now", self.name, timeout)
            self._stop_now(cells)
            grace = time.monotonic() + _KILL_GRACE
            for cell in cells:
                cell.thread.join(max(0.0, grace - time.monotonic()))
        self._finalize()  # the name is free even if a thread is stuck: it holds the old mailbox
        stuck = tuple(c.doing() for c in cells if c.thread.is_alive())
        if stuck:
            raise StopTimeout(f"still busy after the stop deadline: {', '.join(stuck)}", stuck)


class ActorSystem:
    """Hosts actors on one `ThreadChannel` with one timer thread.

    `on_escalate` is called (on the failing actor's thread) when an actor exceeds its restart
    intensity; the daemon uses it to exit non-zero so that systemd restarts it.
    """

    def __init__(
        self,
        name: str = "actord",
        *,
        clock: Clock | None = None,
        on_escalate: Callable[[Escalation], None] | None = None,
        default_capacity: int = 1024,
        default_policy: RestartPolicy | None = None,
        dead_letter_capacity: int = 1000,
    ) -> None:
        logctx.install()
        self.name = name
        self.clock: Clock = clock or SystemClock()
        self.channel = ThreadChannel(
            dead_letter_capacity=dead_letter_capacity,
            timers=TimerService(name=f"{name}-timers"),
        )
        self.default_capacity = default_capacity
        self.default_policy = default_policy or RestartPolicy()
        self._on_escalate = on_escalate
        # _lock guards _groups, _order, _retired and _stopping; taken before a group's lock.
        self._lock = threading.Lock()
        self._groups: dict[str, _Group] = {}
        self._order: list[_Group] = []  # start order; stopped in reverse
        self._stopping = False  # set once by stop(): no spawn, restart or escalation after
        # _cells_lock guards _cells (taken under a group's lock as members start).
        self._cells_lock = threading.Lock()
        self._cells: set[_Cell] = set()  # every member thread started and not yet exited
        self._retired: dict[str, _Counters] = {}  # summed counters of a role's stopped actors
        # The event-loop thread of the async actors: started with the first one (guarded by
        # _lock), stopped and joined last.
        self._aio: LoopHost | None = None
        self.escalations: list[Escalation] = []  # appended once per escalated actor
        self.escalated = threading.Event()  # set on the first escalation

    def __enter__(self) -> ActorSystem:
        return self

    @property
    def stopping(self) -> bool:
        """True once `stop()` has begun."""
        return self._stopping

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def spawn(
        self,
        factory: Callable[[], Actor],
        name: str,
        *,
        capacity: int | None = None,
        policy: RestartPolicy | None = None,
        role: str | None = None,
    ) -> ActorRef:
        """Start one actor (a class or any zero-argument callable returning an `Actor`).

        Give short-lived actors (one per job, say) a `role`: metrics count them under it,
        and keep their totals after they are gone, so that labels stay bounded."""
        return self._spawn(
            factory, name, 1, pooled=False, capacity=capacity, policy=policy, role=role
        )

    def spawn_pool(
        self,
        factory: Callable[[], Actor],
        name: str,
        size: int,
        *,
        capacity: int | None = None,
        policy: RestartPolicy | None = None,
        fair: bool = False,
    ) -> ActorRef:
        """Start `size` actors sharing the mailbox `name`: whoever is free takes the next.
        With `fair`, the next in turn by the payloads' `fair_key` (see `FairMailbox`):
        `capacity` then bounds each key's queue."""
        return self._spawn(
            factory, name, size, pooled=True, capacity=capacity, policy=policy, fair=fair
        )

    def _spawn(
        self,
        factory: Callable[[], Actor],
        name: str,
        size: int,
        *,
        pooled: bool,
        capacity: int | None,
        policy: RestartPolicy | None,
        role: str | None = None,
        fair: bool = False,
    ) -> ActorRef:
        if size < 1:
            raise InvalidArgument(f"pool size must be >= 1, got {size}")
        if is_async_factory(factory):
            self._loop_host()
        with self._lock:
            if self._stopping:
                raise ActorStopping(f"the actor system is stopping: {name!r} was not started")
            if name in self._groups:
                raise NameTaken(f"an actor named {name!r} is already running")
            self.channel.register(name, capacity or self.default_capacity, fair=fair)
            group = _Group(
                self, name, factory, pooled=pooled, policy=policy or self.default_policy, role=role
            )
            self._groups[name] = group
            self._order.append(group)
        group.resize(size)
        return group.ref

    def resize(self, name: str, size: int) -> None:
        """Change a pool's size while it runs; no queued message is lost."""
        group = self._group(name)
        if not group.pooled:
            raise InvalidArgument(f"{name!r} is a single actor, not a pool")
        group.resize(size)

    def size(self, name: str) -> int:
        """How many members pool `name` has been asked for (its size; retiring members no
        longer count)."""
        group = self._group(name)
        if not group.pooled:
            raise InvalidArgument(f"{name!r} is a single actor, not a pool")
        return group.size

    def restart(self, name: str) -> int:
        """Restart an actor (each member of a pool), or one pool member (``pool#i``), on its
        mailbox; returns how many members restart.

        Refused (`InvalidArgument`) for an actor whose policy allows no restart
        (``max_restarts=0``): its state would be lost; or refuses one (``refuse_restart``)."""
        group, member = self._resolve(name)
        if group.policy.refuse_restart:
            raise InvalidArgument(f"{name!r} cannot restart: {group.policy.refuse_restart}")
        if group.policy.max_restarts == 0:
            raise InvalidArgument(
                f"{name!r} keeps state a restart would lose (max_restarts=0); "
                "restart the daemon instead"
            )
        return group.restart(member)

    def lookup(self, name: str) -> ActorRef:
        return self._group(name).ref

    def _group(self, name: str) -> _Group:
        group = self._groups.get(name)
        if group is None:
            raise UnknownActor(f"no actor named {name!r}")
        return group

    def _resolve(self, name: str) -> tuple[_Group, str | None]:
        # An actor or pool by its name, or one pool member by the name `stats()` gives it
        # (``pool#i``): the group, and the member (None for the whole actor or pool).
        group = self._groups.get(name)
        if group is not None:
            return group, None
        pool, sep, _ = name.rpartition("#")
        group = self._groups.get(pool) if sep else None
        if group is None or not group.pooled:
            raise UnknownActor(f"no actor named {name!r}")
        return group, name

    def ping(self, name: str, *, timeout: float = 5.0) -> Pong:
        """Ask a receive loop whether it is turning: the actor's, any member's of a pool, or
        one member's (``pool#i``). Raises `UnknownActor`, `ActorDead` or `AskTimeout`."""
        group, member = self._resolve(name)
        if member is None:
            return group.ref.ping(timeout=timeout)
        group.cell(member)  # a member that is not running is not waited for
        pong: Pong = self.channel.ask_control(
            group.name, ControlKind.PING, timeout=timeout, member=member
        )
        return pong

    def tell(
        self,
        name: str,
        payload: Any,
        *,
        mtype: MessageType = MessageType.DATA,
        sender: str = "$system",
        timeout: float | None = None,
    ) -> None:
        """Send to an actor or pool (see `ActorRef.tell`), or to one pool member
        (``pool#i``): that member alone takes it, before what the pool has queued; it never
        blocks (`MailboxFull` at once while the mailbox's capacity of messages already waits
        for that member). Raises `UnknownActor` for a name nothing answers to."""
        group, member = self._resolve(name)
        if member is None:
            group.ref.tell(payload, mtype=mtype, sender=sender, timeout=timeout)
        else:
            group.cell(member).tell(payload, mtype=mtype, sender=sender)

    def commands(self, name: str, *, timeout: float = 5.0) -> frozenset[str]:
        """The admin commands (`Actor.commands`) an actor, a pool (every member) or one pool
        member (``pool#i``) accepts; waits up to `timeout` for a just-spawned actor's first
        instance, whose class declares them."""
        group, member = self._resolve(name)
        return group.commands(member, timeout)

    def count(self) -> int:
        """How many actors (a pool counts once) are running."""
        return len(self._order)  # one read of a list's length: no lock needed

    def member_count(self) -> int:
        """How many actor threads there are, each pool member counted (the rows of
        `stats()`), without building their statistics."""
        return sum(  # each group's list read once, as `stats()` does; no lock needed
            sum(not cell.retired for cell in tuple(group.cells)) for group in tuple(self._order)
        )

    def names(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(g.name for g in self._order)

    def census(self) -> tuple[tuple[ActorStats, ...], tuple[ActorStats, ...]]:
        """`stats()` and `retired()` in one snapshot: an actor that stops meanwhile is
        counted in exactly one of them, so totals summed over both never go down."""
        with self._lock:
            live = tuple(s for g in self._order for s in g.stats())
            return live, self._retired_stats()

    def stats(self) -> tuple[ActorStats, ...]:
        """A snapshot of every member of every actor, in start order. Takes no lock (the list
        is copied in one C call): a signal handler on a thread that holds one may ask."""
        return tuple(s for g in tuple(self._order) for s in g.stats())

    def retired(self) -> tuple[ActorStats, ...]:
        """Totals of the actors of each role that have stopped (for monotonic metrics)."""
        with self._lock:
            return self._retired_stats()

    def _retired_stats(self) -> tuple[ActorStats, ...]:
        # Called with _lock held.
        return tuple(
            ActorStats._capture(role, role, counters, 0, 0, role)
            for role, counters in sorted(self._retired.items())
        )

    def declare_roles(self, *roles: str) -> None:
        """Make `roles` known before their first actor starts: metrics export them (at zero)
        from now on, so that rate() sees the very first job."""
        for role in roles:
            self._retire(role, [])

    def _retire(self, role: str, members: list[_Counters]) -> None:
        with self._lock:
            self._add_retired(role, members)

    def _add_retired(self, role: str, members: list[_Counters]) -> None:
        # Called with _lock held.
        total = self._retired.setdefault(role, _Counters())
        total.state = ActorState.STOPPED
        for counters in members:
            total.add(counters)

    def schedule(
        self,
        delay: float,
        recipient: str,
        payload: Any,
        *,
        interval: float | None = None,
        sender: str = "$timer",
    ) -> Timer:
        """Send `payload` to `recipient` after `delay` seconds, then every `interval` if given."""
        return schedule_message(self.channel, sender, recipient, payload, delay, interval)

    def _loop_host(self) -> LoopHost:
        # Called with no lock held (a group's lock is taken after ours, never before).
        with self._lock:
            if self._stopping:
                raise ActorStopping("the actor system is stopping: no async actor starts")
            if self._aio is None:
                self._aio = LoopHost(f"{self.name}-aio")
            return self._aio

    def _escalated(self, escalation: Escalation) -> None:
        self.escalations.append(escalation)
        self.escalated.set()
        if self._on_escalate is not None:
            self._on_escalate(escalation)

    def _started(self, cell: _Cell) -> None:
        with self._cells_lock:
            self._cells.add(cell)

    def _exited(self, cell: _Cell) -> None:
        # The exiting member's own thread, as its very last act.
        with self._cells_lock:
            self._cells.discard(cell)

    def _forget(self, group: _Group, inbox: Inbox, counters: list[_Counters]) -> None:
        # The name and the route go together: a spawn that reuses the name finds both free.
        # A role's totals take the actor's counters in the same step (see `census`).
        with self._lock:
            if group.role is not None:
                self._add_retired(group.role, counters)
            inbox.detach()
            if self._groups.get(group.name) is group:
                del self._groups[group.name]
            if group in self._order:
                self._order.remove(group)

    def halt(self) -> None:
        """Tell every actor to stop now (in reverse start order) without waiting for any:
        each ends after the message in hand, or at once where the runtime has it blocked.
        `stop()` then joins them. No actor is accepted from here on."""
        with self._lock:
            self._stopping = True
            groups = list(reversed(self._order))
        for group in groups:
            group.stop(graceful=False, timeout=0.0, wait=False)

    def stop(self, *, graceful: bool = True, timeout: float = 10.0) -> None:
        """Stop every actor in reverse start order, then close the channel and the timers.

        Graceful: each actor in turn drains what is queued for up to `timeout` (its own
        deadline, starting when its stop does), then is stopped at once. Immediate: every
        actor is told at once and all are joined against one deadline, `timeout` from now.
        Either way every runtime thread is joined, or `StopTimeout` names the ones still
        busy and what they hold. No actor is accepted once the stop has begun.
        """
        if not graceful:
            self.halt()  # all told first: an idle actor never waits on a busy one
        with self._lock:
            self._stopping = True
            groups = list(reversed(self._order))
        deadline = time.monotonic() + timeout
        for group in groups:
            own = timeout if graceful else max(0.0, deadline - time.monotonic())
            try:
                group.stop(graceful=graceful, timeout=own)
            except StopTimeout as error:  # judged below, once the channel has closed
                _log.warning("%s", error)
        self.channel.close()  # wakes whatever still waits on a mailbox or a reply
        with self._cells_lock:
            left = [c for c in self._cells if c.thread is not threading.current_thread()]
        # The caller's deadline holds (a moment more for threads the close just woke).
        last = max(deadline if not graceful else 0.0, time.monotonic() + _CLOSE_GRACE)
        for cell in left:
            cell.thread.join(max(0.0, last - time.monotonic()))
        stuck = [c.doing() for c in left if c.thread.is_alive()]
        host = self._aio
        if host is not None and not host.stop(max(0.0, last - time.monotonic()) + _KILL_GRACE):
            stuck.append(f"{host.thread.name} (its event loop is blocked)")
        if stuck:
            text = ", ".join(stuck)
            raise StopTimeout(f"still busy after the stop deadline: {text}", tuple(stuck))
