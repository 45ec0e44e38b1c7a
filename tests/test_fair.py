"""The fair mailbox: one FIFO per key, served in turn; a key alone uses every member; a key
never holds more than its share while another waits (`actord/runtime/fair.py`).

The property runs the real `FairMailbox` under a seeded simulation of a pool: members take
units whose costs are random, jobs arrive at random ticks with a reader's window of units in
flight, and busy members may give their turn back (`yield_turn`), as the parser's do.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from actord import (
    Actor,
    ActorSystem,
    AsyncActor,
    Control,
    ControlKind,
    FairKeyed,
    MailboxClosed,
    MailboxFull,
    Message,
    MessageType,
)
from actord.daemon.metrics import RuntimeCollector
from actord.runtime.fair import FairMailbox, fair_key
from actors.model import LogBlock
from actors.ray_link import RayLink, RemoteCounters
from actors.remote import RemoteParser

from .conftest import WAIT, Call, Recorder


@dataclass(frozen=True, slots=True)
class Unit:
    job: str
    index: int
    cost: int = 1

    @property
    def fair_key(self) -> str:
        return self.job


def unit(job: str, index: int = 0, cost: int = 1) -> Message:
    return Message(MessageType.DATA, f"{job}.reader", "pool", Unit(job, index, cost))


def test_a_payloads_fair_key_is_its_key_and_none_without_one() -> None:
    assert isinstance(Unit("a", 0), FairKeyed)
    assert fair_key(unit("log-3")) == "log-3"
    assert fair_key(Message(MessageType.DATA, "x", "pool", "no key")) is None


def test_one_member_alternates_between_two_waiting_keys() -> None:
    box = FairMailbox("pool", 8)
    for i in range(3):
        box.put(unit("a", i))
    for i in range(3):
        box.put(unit("b", i))
    taken = [box.take(1, 0, "pool#0")[0].payload for _ in range(6)]
    assert [(u.job, u.index) for u in taken] == [
        ("a", 0),
        ("b", 0),
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("b", 2),
    ]


def test_a_key_alone_uses_every_member_and_a_newcomer_gets_the_next_free_one() -> None:
    box = FairMailbox("pool", 8)
    for i in range(4):
        box.put(unit("a", i))
    assert [box.take(1, 0, f"pool#{m}")[0].payload.job for m in range(3)] == ["a"] * 3
    assert box.share().held == {"a": 3}
    box.put(unit("b"))
    # pool#0 is free again: "b" holds nothing, "a" holds 2 others: "b" goes first.
    assert box.take(1, 0, "pool#0")[0].payload.job == "b"
    assert box.share().held == {"a": 2, "b": 1}


def test_each_keys_fifo_is_bounded_alone_so_a_full_key_never_keeps_another_out() -> None:
    box = FairMailbox("pool", 2)
    box.put(unit("a", 0))
    box.put(unit("a", 1))
    with pytest.raises(MailboxFull):
        box.put(unit("a", 2), timeout=0)
    box.put(unit("b", 0), timeout=0)  # another key still has room
    assert len(box) == 3
    blocked = Call(lambda: box.put(unit("a", 2)))
    blocked.start()
    assert box.take(1, 0, "pool#0")[0].payload == Unit("a", 0)  # room for "a" again
    blocked.join(WAIT)
    assert blocked.error is None and not blocked.is_alive()
    assert len(box) == 3


def test_control_first_and_drain_requeue_leave_keep_every_message() -> None:
    box = FairMailbox("pool", 4)
    box.put(unit("a", 0))
    box.put(unit("b", 0))
    box.put_control(Message(MessageType.CONTROL, "$system", "pool", Control(ControlKind.PING)))
    assert box.take(1, 0, "pool#0")[0].type is MessageType.CONTROL
    first = box.take(1, 0, "pool#0")
    assert box.share().held == {"a": 1}
    assert box.requeue_front(first)  # back at the front of its key's FIFO
    assert box.leave("pool#0") == []
    assert box.share().held == {}
    assert sorted(m.payload.job for m in box.drain()) == ["a", "b"]  # nothing lost
    assert not box.requeue_front(first)


def test_yield_turn_gives_the_member_back_only_to_a_key_owed_it() -> None:
    box = FairMailbox("pool", 8)
    for i in range(3):
        box.put(unit("a", i))
    held = [box.take(1, 0, f"pool#{m}")[0] for m in range(2)]
    assert not box.yield_turn("pool#0", held[0])  # nobody else waits: "a" keeps both
    box.put(unit("b"))
    assert box.yield_turn("pool#0", held[0])  # "b" holds none, "a" two: one goes back
    assert not box.yield_turn("pool#1", held[1])  # now "a" holds its share: 1 of 2
    assert box.share().held == {"a": 1} and box.share().yields == 1
    assert box.take(1, 0, "pool#0")[0].payload.job == "b"
    assert box.take(1, 0, "pool#1")[0].payload == Unit("a", 0)  # first of its key again


def test_a_fair_pool_serves_two_jobs_in_turn_on_real_threads(recorder: Recorder) -> None:
    gate = threading.Event()

    class _Member(Actor):
        def handle(self, message: Message) -> None:
            gate.wait(WAIT)
            recorder.add(self.member, message)

    with ActorSystem("fair") as system:
        pool = system.spawn_pool(_Member, "pool", 1, capacity=8, fair=True)
        for i in range(4):
            pool.tell(Unit("a", i))
        for i in range(4):
            pool.tell(Unit("b", i))
        gate.set()
        recorder.wait_count(8)
    # The member took a's first unit before b's came; then one of each in turn.
    assert [(u.job, u.index) for u in recorder.payloads()] == [
        ("a", 0),
        ("b", 0),
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("b", 2),
        ("a", 3),
        ("b", 3),
    ]


# -- the property: a simulated pool over random unit costs --------------------------------


@dataclass
class _Job:
    name: str
    arrives: int
    costs: list[int]
    window: int
    sent: int = 0
    finished: int = 0


@dataclass
class _Busy:
    message: Message
    started: int
    left: int


@dataclass
class _Pool:
    """Members, jobs with a reader's window, and the dispatch log the checks read."""

    box: FairMailbox
    members: list[str]
    jobs: list[_Job]
    yielding: bool
    busy: dict[str, _Busy] = field(default_factory=dict)
    # (tick, key taken, holdings before the take, keys waiting before the take)
    log: list[tuple[int, str, dict[str, int], frozenset[str]]] = field(default_factory=list)
    taken: list[tuple[str, int]] = field(default_factory=list)  # (job, unit index) as taken
    holding: dict[str, str] = field(default_factory=dict)  # member -> job it took last
    tick: int = 0

    def refill(self, job: _Job) -> None:
        while job.sent < len(job.costs) and job.sent - job.finished < job.window:
            self.box.put(unit(job.name, job.sent, job.costs[job.sent]), timeout=0)
            job.sent += 1

    def take(self, member: str) -> None:
        share = self.box.share()
        (message,) = self.box.take(1, 0, member)
        held = {str(k): v for k, v in share.held.items()}
        previous = self.holding.pop(member, None)
        if previous is not None:  # the take ended what this member held: not counted
            held[previous] -= 1
        self.holding[member] = message.payload.job
        if member in self.busy:  # its previous unit counts until it takes again
            raise AssertionError(f"{member} took while busy")
        self.log.append((self.tick, message.payload.job, held, frozenset(map(str, share.waiting))))
        self.taken.append((message.payload.job, message.payload.index))
        self.busy[member] = _Busy(message, self.tick, message.payload.cost)

    def step(self) -> None:
        by_name = {job.name: job for job in self.jobs}
        for job in self.jobs:
            if job.arrives == self.tick:
                self.refill(job)
        for member in list(self.busy):  # work, and finish what is done
            entry = self.busy[member]
            entry.left -= 1
            if entry.left <= 0:
                del self.busy[member]
                job = by_name[entry.message.payload.job]
                job.finished += 1
                self.refill(job)
        if self.yielding:  # each busy member looks now and then, as a parser does
            for member in list(self.busy):
                if self.box.yield_turn(member, self.busy[member].message):
                    del self.busy[member]
                    del self.holding[member]
        for member in self.members:
            if member in self.busy:
                continue
            if len(self.box):
                self.take(member)
            else:  # it would block in take, holding nothing: a take that times out at once
                with pytest.raises(TimeoutError):
                    self.box.take(1, 0, member)
                self.holding.pop(member, None)
        self.tick += 1

    def done(self) -> bool:
        return all(job.finished == len(job.costs) for job in self.jobs)


def _pool(seed: int, yielding: bool) -> _Pool:
    rng = random.Random(seed)
    members = [f"pool#{i}" for i in range(rng.randint(1, 4))]
    jobs = [
        _Job(
            f"job-{j}",
            arrives=0 if j == 0 else rng.randint(0, 30),
            costs=[rng.choice((1, 1, 2, 3, 5, 13, 40)) for _ in range(rng.randint(1, 25))],
            window=rng.randint(1, 6),
        )
        for j in range(rng.randint(1, 4))
    ]
    return _Pool(FairMailbox("pool", 8), members, jobs, yielding)


def _run(pool: _Pool) -> None:
    while not pool.done():
        pool.step()
        assert pool.tick < 10_000, "the simulated pool stalled"
        held = pool.box.share().held
        waiting = pool.box.share().waiting
        # A job alone, or any job, uses every member while units wait: none idles.
        if len(pool.box):
            assert len(pool.busy) == len(pool.members), (pool.tick, held)
        assert sum(held.values()) == len(pool.busy)
        if pool.yielding:
            # With turns given back: no job holds more than one member beyond a waiting one.
            for key, count in held.items():
                assert all(count <= held.get(w, 0) + 1 for w in waiting if w != key), (
                    pool.tick,
                    held,
                    waiting,
                )


def _check_dispatches(pool: _Pool) -> None:
    log = pool.log
    for tick, key, held, waiting in log:
        # The key taken held the fewest members of the waiting keys.
        assert all(held.get(key, 0) <= held.get(w, 0) for w in waiting), (tick, key, held)
    for job in pool.jobs:
        mine = [i for i, entry in enumerate(log) if entry[1] == job.name]
        for first, second in itertools.pairwise(mine):
            between = log[first + 1 : second]
            if not all(job.name in entry[3] for entry in between):
                continue  # it had nothing waiting for a while: nothing was owed to it
            # No job waits longer than one unit of each other job holding as many members
            # as it does (one holding fewer is served first: that is its share).
            overtook: dict[str, int] = {}
            for _, other, held, _ in between:
                if held.get(other, 0) >= held.get(job.name, 0):
                    overtook[other] = overtook.get(other, 0) + 1
            assert all(n <= 1 for n in overtook.values()), (job.name, overtook, between)


@pytest.mark.parametrize("yielding", [False, True], ids=["turns", "turns+yield"])
@pytest.mark.parametrize("seed", range(40))
def test_seeded_random_costs_every_job_gets_its_turn_and_its_share(
    seed: int, yielding: bool
) -> None:
    pool = _pool(seed, yielding)
    _run(pool)
    _check_dispatches(pool)
    # Each job's units were all done, and taken in order (one given back goes first again).
    for job in pool.jobs:
        assert job.finished == len(job.costs)
        order = [index for name, index in pool.taken if name == job.name]
        assert list(dict.fromkeys(order)) == list(range(len(job.costs))), order


@settings(max_examples=60, deadline=None)
@given(
    members=st.integers(1, 4),
    costs=st.lists(st.lists(st.integers(1, 30), min_size=1, max_size=12), min_size=1, max_size=4),
)
def test_property_over_unit_costs(members: int, costs: list[list[int]]) -> None:
    jobs = [_Job(f"job-{j}", arrives=0, costs=c, window=4) for j, c in enumerate(costs)]
    pool = _Pool(FairMailbox("pool", 8), [f"pool#{i}" for i in range(members)], jobs, True)
    _run(pool)
    _check_dispatches(pool)


def test_a_job_alone_uses_every_member() -> None:
    jobs = [_Job("alone", arrives=0, costs=[7] * 12, window=8)]
    pool = _Pool(FairMailbox("pool", 8), [f"pool#{i}" for i in range(4)], jobs, True)
    pool.step()
    assert pool.box.share().held == {"alone": 4}
    _run(pool)


def test_fair_pool_metrics_count_busy_members_and_sharing_keys_by_pool_only(
    system: ActorSystem,
) -> None:
    entered = threading.Semaphore(0)
    release = threading.Event()

    class _Holder(Actor):
        def handle(self, message: Message) -> None:
            entered.release()
            release.wait(WAIT)

    registry = CollectorRegistry()  # this test's own
    registry.register(RuntimeCollector(system.stats, system.channel))
    pool = system.spawn_pool(_Holder, "pool", 2, capacity=4, fair=True)
    for job in ("a", "b", "c"):
        pool.tell(Unit(job, 0))
    assert entered.acquire(timeout=WAIT) and entered.acquire(timeout=WAIT)
    try:
        families = {
            f.name: f.samples
            for f in text_string_to_metric_families(generate_latest(registry).decode())
            if f.name.startswith("actord_pool_")
        }
    finally:
        release.set()
    values = {name: [(s.labels, s.value) for s in samples] for name, samples in families.items()}
    assert values["actord_pool_busy_members"] == [({"pool": "pool"}, 2.0)]
    assert values["actord_pool_sharing_keys"] == [({"pool": "pool"}, 3.0)]  # a, b held; c waits
    assert values["actord_pool_yields"] == [({"pool": "pool"}, 0.0)]


class _FakeLink:
    """What a Ray pool member needs of its link: the calls it makes are recorded, and none
    is answered (the member keeps them in flight). The first call waits for `go`."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.calls: list[tuple[str, int]] = []
        self.made = threading.Condition()

    def counters_for(self, slot: str) -> RemoteCounters:
        return RemoteCounters()

    def call(self, slot: str, method: str, args: list[Any], *_: Any) -> Future[Any]:
        self.go.wait(WAIT)
        with self.made:
            self.calls.append((args[0].decode(), args[1]))
            self.made.notify_all()
        return Future()

    def drop(self, slot: str) -> None:
        pass


def test_a_ray_member_keeps_the_jobs_units_in_flight_in_turn() -> None:
    link = _FakeLink()

    def block(job: str, index: int) -> LogBlock:
        return LogBlock(job, index, index, job.encode(), "x", f"{job}.reader", f"{job}.writer")

    with ActorSystem("ray-turns") as system:
        member = lambda: RemoteParser(cast(RayLink, link), depth=8)  # noqa: E731
        pool = system.spawn_pool(member, "parser", 1, capacity=8, fair=True)
        pool.tell(block("a", 0))
        for index in range(1, 4):  # while the member is inside a's first call
            pool.tell(block("a", index))
        for index in range(4):
            pool.tell(block("b", index))
        link.go.set()
        with link.made:
            assert link.made.wait_for(lambda: len(link.calls) == 8, WAIT), link.calls
    assert link.calls == [(job, i) for i in range(4) for job in ("a", "b")]


def test_racing_senders_and_members_lose_nothing_and_keep_each_keys_order() -> None:
    box = FairMailbox("pool", 8)
    keys, per_key, members = ("a", "b", "c", "d"), 2_000, 3
    got: list[list[Unit]] = [[] for _ in range(members)]

    def send(key: str) -> None:
        for index in range(per_key):
            box.put(unit(key, index), timeout=WAIT)

    def receive(mine: list[Unit], member: str) -> None:
        while True:
            try:
                (message,) = box.take(1, WAIT, member)
            except MailboxClosed:
                return
            mine.append(message.payload)

    senders = [threading.Thread(target=send, args=(key,), name=f"send-{key}") for key in keys]
    receivers = [
        threading.Thread(target=receive, args=(got[i], f"pool#{i}"), name=f"take-{i}")
        for i in range(members)
    ]
    for thread in senders + receivers:
        thread.start()
    for thread in senders:
        thread.join(WAIT)
    box.close()  # the members drain what is queued, then stop
    for thread in receivers:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in senders + receivers)
    every = [u for mine in got for u in mine]
    assert sorted((u.job, u.index) for u in every) == [
        (key, i) for key in keys for i in range(per_key)
    ]
    for mine in got:  # each member took each key's units in the order they were sent
        for key in keys:
            indexes = [u.index for u in mine if u.job == key]
            assert indexes == sorted(indexes)
    assert box.share().held == {}  # a member whose take ended holds nothing


def test_close_wakes_a_sender_blocked_on_its_full_key() -> None:
    box = FairMailbox("pool", 1)
    box.put(unit("a", 0))
    blocked = Call(lambda: box.put(unit("a", 1)))
    blocked.start()
    box.close()
    blocked.join(WAIT)
    assert isinstance(blocked.error, MailboxClosed)
    assert [m.payload for m in box.drain()] == [Unit("a", 0)]


def test_async_members_of_a_fair_pool_take_the_keys_in_turn(recorder: Recorder) -> None:
    entered = threading.Event()
    loops: list[asyncio.AbstractEventLoop] = []
    gate = asyncio.Event()

    class _AsyncMember(AsyncActor):
        async def handle(self, message: Message) -> None:
            if not entered.is_set():
                loops.append(asyncio.get_running_loop())
                entered.set()
                await gate.wait()
            recorder.add(self.member, message)

    with ActorSystem("fair-async") as system:
        pool = system.spawn_pool(_AsyncMember, "pool", 1, capacity=8, fair=True)
        pool.tell(Unit("a", 0))
        assert entered.wait(WAIT)  # the member holds a's first unit, at the gate
        for i in range(1, 3):
            pool.tell(Unit("a", i))
        for i in range(3):
            pool.tell(Unit("b", i))
        loops[0].call_soon_threadsafe(gate.set)
        recorder.wait_count(6)
    assert [(u.job, u.index) for u in recorder.payloads()] == [
        ("a", 0),
        ("b", 0),
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("b", 2),
    ]


def test_an_async_sender_awaits_room_for_its_full_key_without_spinning() -> None:
    box = FairMailbox("pool", 1)
    box.put(unit("a", 0))

    class _Waiter:
        def __init__(self) -> None:
            self.woken = threading.Event()

        def release(self) -> None:
            self.woken.set()

    waiter = _Waiter()
    assert box.wait_room(waiter)  # a's FIFO is full: registered, not "try again now"
    assert not waiter.woken.is_set()
    assert box.poll(1, "pool#0")[0].payload == Unit("a", 0)  # room again: the waiter is woken
    assert waiter.woken.is_set()
    assert not box.wait_room(_Waiter())  # nothing full: put again at once
    assert box.poll(1, "pool#0") == [] and box.share().held == {}
