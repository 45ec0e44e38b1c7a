"""Awaiting actors from a real event loop: `ref.ask_async` and `ref.send_async`, answered by
thread actors. No thread per call, every reply to its own awaiter, cancellation withdraws."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from actord import (
    Actor,
    ActorDead,
    ActorSystem,
    AskTimeout,
    DeadLetterReason,
    MailboxFull,
    Message,
    RestartPolicy,
)

from .conftest import WAIT, Gate


@dataclass(frozen=True, slots=True)
class Job:
    n: int
    hold: bool = False  # held (unanswered) until the test releases it


class Held:
    """Requests the pool keeps unanswered; `full` is set once `expected` are kept."""

    def __init__(self, expected: int = 0) -> None:
        self.lock = threading.Lock()  # guards messages
        self.messages: list[Message] = []
        self.expected = expected
        self.full = threading.Event()

    def add(self, message: Message) -> None:
        with self.lock:
            self.messages.append(message)
            if len(self.messages) == self.expected:
                self.full.set()


class Doubler(Actor):
    """Replies 2n at once; a held job is kept, unanswered, in `held`."""

    def __init__(self, held: Held) -> None:
        self.held = held

    def handle(self, message: Message) -> None:
        job = message.payload
        if job.hold:
            self.held.add(message)
            return
        if job.n < 0:
            raise ValueError(f"negative: {job.n}")
        self.reply(message, 2 * job.n)


@pytest.fixture
def real_system() -> Iterator[ActorSystem]:
    system = ActorSystem("aio", default_policy=RestartPolicy(max_restarts=100, backoff_initial=0))
    try:
        yield system
    finally:
        system.stop(timeout=WAIT)


def test_ten_thousand_concurrent_asks_each_reply_to_its_awaiter_and_no_thread(
    real_system: ActorSystem,
) -> None:
    pool = real_system.spawn_pool(lambda: Doubler(Held()), "double", 4)
    pool.ask(Job(0), timeout=WAIT)  # every member up, the timer thread state settled
    before = {t.ident for t in threading.enumerate()}
    during: set[int | None] = set()

    async def main() -> list[int]:
        tasks = [asyncio.ensure_future(pool.ask_async(Job(i), timeout=60)) for i in range(10_000)]
        await asyncio.sleep(0)  # every ask sent and pending now
        during.update(t.ident for t in threading.enumerate())
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    assert results == [2 * i for i in range(10_000)]
    assert during == before  # no thread made for the asks (nor for their timeouts)
    assert real_system.channel.pending_requests() == 0


def test_cancelling_half_mid_flight_leaves_no_pending_slot_and_the_rest_complete(
    real_system: ActorSystem,
) -> None:
    n = 5_000  # 10,000 asks: half held and cancelled, half answered
    held = Held(n)
    pool = real_system.spawn_pool(lambda: Doubler(held), "double", 4)
    channel = real_system.channel

    async def main() -> list[int]:
        doomed = [
            asyncio.ensure_future(pool.ask_async(Job(i, hold=True), timeout=60)) for i in range(n)
        ]
        await asyncio.sleep(0)  # sent
        # Every held job has reached its actor: those asks are in flight, unanswered.
        assert await asyncio.to_thread(held.full.wait, WAIT)
        kept = [asyncio.ensure_future(pool.ask_async(Job(i), timeout=60)) for i in range(n)]
        await asyncio.sleep(0)
        assert channel.pending_requests() >= n
        for task in doomed:
            task.cancel()
        await asyncio.gather(*doomed, return_exceptions=True)
        assert all(t.cancelled() for t in doomed)
        return await asyncio.gather(*kept)

    results = asyncio.run(main())
    assert results == [2 * i for i in range(n)]
    assert channel.pending_requests() == 0  # withdrawn, not left for a reply that may never come
    # The held jobs answered now: each reply is a late one, dead-lettered, never lost.
    before = channel.dead_letter_counts().get(DeadLetterReason.LATE_REPLY, 0)
    for message in held.messages:
        channel.reply(message, 0, sender="double")
    late = channel.dead_letter_counts().get(DeadLetterReason.LATE_REPLY, 0)
    assert late - before == n


def test_errors_arrive_as_in_ask(real_system: ActorSystem) -> None:
    entered, release = threading.Event(), threading.Event()
    pool = real_system.spawn_pool(lambda: Doubler(Held()), "double", 1)
    gate = real_system.spawn(lambda: Gate(entered, release), "gate")

    async def errors() -> None:
        with pytest.raises(ValueError, match="negative: -3"):
            await pool.ask_async(Job(-3), timeout=WAIT)
        gate.tell("hold")
        assert await asyncio.to_thread(entered.wait, WAIT)
        with pytest.raises(AskTimeout):
            await gate.ask_async("never answered", timeout=0.05)
        release.set()
        gate.stop(timeout=WAIT)
        with pytest.raises(ActorDead):
            await gate.ask_async("x", timeout=WAIT)

    asyncio.run(errors())
    assert real_system.channel.pending_requests() == 0


def test_an_unknown_name_fails_the_ask_with_actor_dead(real_system: ActorSystem) -> None:
    ref = real_system.spawn_pool(lambda: Doubler(Held()), "double", 1)
    ref.stop(timeout=WAIT)

    async def main() -> None:
        with pytest.raises(ActorDead):
            await ref.ask_async(Job(1), timeout=WAIT)

    asyncio.run(main())


def test_send_async_waits_for_room_without_blocking_the_loop(real_system: ActorSystem) -> None:
    entered, release = threading.Event(), threading.Event()
    gate = real_system.spawn(lambda: Gate(entered, release), "gate", capacity=2)
    gate.tell("first")  # taken, and held inside handle
    assert entered.wait(WAIT)
    gate.tell("a")
    gate.tell("b")  # the mailbox is full now

    async def main() -> None:
        sender = asyncio.ensure_future(gate.send_async("c", timeout=WAIT))
        ticks = 0
        while ticks < 20:  # the loop turns while the send waits
            await asyncio.sleep(0)
            ticks += 1
        assert not sender.done()
        with pytest.raises(MailboxFull):
            await gate.send_async("d", timeout=0.05)
        release.set()  # room appears as the gate takes the next messages
        await asyncio.wait_for(sender, WAIT)

    asyncio.run(main())
    gate.ping(timeout=WAIT)
    assert real_system.channel.dead_letter_counts().get(DeadLetterReason.MAILBOX_FULL, 0) == 0


def test_an_ask_to_a_full_mailbox_times_out_and_a_cancelled_sender_leaves_no_waiter(
    real_system: ActorSystem,
) -> None:
    entered, release = threading.Event(), threading.Event()
    gate = real_system.spawn(lambda: Gate(entered, release), "gate", capacity=1)
    gate.tell("first")
    assert entered.wait(WAIT)
    gate.tell("queued")  # full

    async def main() -> None:
        with pytest.raises(AskTimeout, match="stayed full"):
            await gate.ask_async("x", timeout=0.05)
        waiting = asyncio.ensure_future(gate.send_async("y"))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        late = asyncio.ensure_future(gate.send_async("z", timeout=WAIT))
        await asyncio.sleep(0)
        release.set()
        await asyncio.wait_for(late, WAIT)  # the wake-up went to the sender still waiting

    asyncio.run(main())
    assert real_system.channel.pending_requests() == 0


def test_loops_on_several_threads_ask_at_once_each_reply_to_its_own_loop(
    real_system: ActorSystem, frequent_thread_switches: None
) -> None:
    pool = real_system.spawn_pool(lambda: Doubler(Held()), "double", 2)
    results: dict[int, list[int]] = {}

    def run(index: int) -> None:
        async def main() -> list[int]:
            out = []
            for base in range(0, 2_000, 100):  # bursts: loops switch bridges often
                out += await asyncio.gather(
                    *(pool.ask_async(Job(base + i), timeout=60) for i in range(100))
                )
            return out

        start.wait(WAIT)
        results[index] = asyncio.run(main())

    threads = [threading.Thread(target=run, args=(i,), name=f"test-loop-{i}") for i in range(3)]
    start = threading.Barrier(len(threads))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    assert results == {i: [2 * n for n in range(2_000)] for i in range(3)}
    assert real_system.channel.pending_requests() == 0
