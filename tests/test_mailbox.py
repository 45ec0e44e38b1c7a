"""Mailbox: FIFO, batching, the control lane, backpressure, timeouts and closing."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

from actord import Control, ControlKind, MailboxClosed, MailboxFull, Message, MessageType
from actord.runtime.mailbox import Mailbox, _WaitQueue

from .conftest import WAIT, Call

BLOCKED = 0.05  # how long a blocked call must stay blocked before the test unblocks it


def data(payload: Any) -> Message:
    return Message(MessageType.DATA, "tester", "box", payload)


def control(kind: ControlKind = ControlKind.STOP) -> Message:
    return Message(MessageType.CONTROL, "$system", "box", Control(kind))


def payloads(messages: list[Message]) -> list[Any]:
    return [m.payload for m in messages]


def start_blocked(fn: Callable[[], Any]) -> Call:
    """Start `fn` on a thread and check that it is still blocked a little later."""
    call = Call(fn)
    call.start()
    call.join(BLOCKED)
    assert call.is_alive(), f"expected the call to block (result={call.result!r}, {call.error!r})"
    return call


def test_fifo_order() -> None:
    box = Mailbox("box", 10)
    for i in range(5):
        box.put(data(i))
    assert payloads([box.take(timeout=0)[0] for _ in range(5)]) == [0, 1, 2, 3, 4]


def test_take_returns_at_most_max_items() -> None:
    box = Mailbox("box", 10)
    for i in range(5):
        box.put(data(i))
    assert payloads(box.take(3, timeout=0)) == [0, 1, 2]
    assert payloads(box.take(10, timeout=0)) == [3, 4]
    assert len(box) == 0


def test_control_lane_is_served_before_data() -> None:
    box = Mailbox("box", 10)
    box.put(data("first"))
    stop = control()
    box.put_control(stop)
    assert box.take(10, timeout=0) == [stop]
    assert payloads(box.take(10, timeout=0)) == ["first"]


def test_control_lane_is_not_bounded_by_capacity() -> None:
    box = Mailbox("box", 1)
    box.put(data("full"))
    for _ in range(5):
        box.put_control(control())  # would block (and hang the test) if bounded
    taken = [box.take(timeout=0)[0].type for _ in range(6)]
    assert taken == [MessageType.CONTROL] * 5 + [MessageType.DATA]


def test_put_blocks_while_full_until_another_thread_takes() -> None:
    box = Mailbox("box", 1)
    box.put(data("a"))
    sender = start_blocked(lambda: box.put(data("b")))
    assert payloads(box.take(timeout=WAIT)) == ["a"]
    sender.finish()
    assert sender.error is None
    assert payloads(box.take(timeout=0)) == ["b"]


def test_put_timeout_on_full_raises_mailbox_full_with_the_message() -> None:
    box = Mailbox("box", 1)
    box.put(data("a"))
    rejected = data("b")
    with pytest.raises(MailboxFull) as caught:
        box.put(rejected, timeout=0.01)
    assert caught.value.message is rejected
    assert len(box) == 1
    assert payloads(box.take(10, timeout=0)) == ["a"]


def test_put_timeout_zero_on_full_raises_at_once() -> None:
    box = Mailbox("box", 1)
    box.put(data("a"))
    # Run on a thread: a put that waited (forever) would otherwise hang the test.
    sender = Call(lambda: box.put(data("b"), timeout=0))
    sender.start()
    sender.join(WAIT)
    assert not sender.is_alive()
    assert isinstance(sender.error, MailboxFull)
    assert len(box) == 1


def test_take_timeout_on_empty_raises_timeout_error() -> None:
    box = Mailbox("box", 1)
    with pytest.raises(TimeoutError):
        box.take(timeout=0.01)


def test_close_lets_queued_data_be_taken_then_take_raises() -> None:
    box = Mailbox("box", 10)
    box.put(data(1))
    box.put(data(2))
    box.close()
    assert payloads(box.take(10, timeout=0)) == [1, 2]
    with pytest.raises(MailboxClosed):
        box.take(timeout=0)


def test_put_after_close_raises_mailbox_closed() -> None:
    box = Mailbox("box", 10)
    box.close()
    with pytest.raises(MailboxClosed):
        box.put(data(1))
    assert len(box) == 0


def test_close_wakes_a_blocked_sender() -> None:
    box = Mailbox("box", 1)
    box.put(data("a"))
    sender = start_blocked(lambda: box.put(data("b")))
    box.close()
    sender.finish()
    assert isinstance(sender.error, MailboxClosed)
    assert payloads(box.take(10, timeout=0)) == ["a"]


def test_close_wakes_a_blocked_receiver() -> None:
    box = Mailbox("box", 1)
    receiver = start_blocked(box.take)
    box.close()
    receiver.finish()
    assert isinstance(receiver.error, MailboxClosed)


def test_requeue_front_puts_messages_back_first_in_order() -> None:
    box = Mailbox("box", 10)
    for i in range(4):
        box.put(data(i))
    taken = box.take(2, timeout=0)
    box.requeue_front(taken)
    assert payloads(box.take(10, timeout=0)) == [0, 1, 2, 3]


def test_drain_returns_all_data_and_closes_the_mailbox_for_good() -> None:
    box = Mailbox("box", 10)
    for i in range(3):
        box.put(data(i))
    box.put_control(control())
    taken = box.take(1, timeout=0)  # the control message
    taken = box.take(1, timeout=0)  # a receiver holds message 0 while the drain runs
    assert payloads(box.drain()) == [1, 2]
    assert len(box) == 0
    with pytest.raises(MailboxClosed):
        box.take(timeout=0)
    # What the receiver puts back after the drain is refused: the caller dead-letters it.
    assert box.requeue_front(taken) is False
    assert len(box) == 0


# -- the lock-free put (see mailbox.py) --------------------------------------------------------
# Each race is forced by a hook that runs the other thread's step at the exact point where a
# switch of the GIL could run it: deterministic, where a stress test would hit it by luck.


class _Hooked(deque[Any]):
    """A mailbox's data deque that runs `before` once, ahead of the first call of `method`."""

    def __init__(self, method: str, before: Callable[[], None]) -> None:
        super().__init__()
        self.hooks = {method: before}

    def _run(self, method: str) -> None:
        hook = self.hooks.pop(method, None)
        if hook is not None:
            hook()

    def append(self, item: Any) -> None:
        self._run("append")
        super().append(item)

    def clear(self) -> None:
        self._run("clear")
        super().clear()

    def popleft(self) -> Any:
        self._run("popleft")
        return super().popleft()


def test_a_put_landing_while_a_take_removes_its_batch_is_kept() -> None:
    box = Mailbox("box", 100)
    hooked = _Hooked("clear", lambda: None)
    box._data = hooked
    for i in range(3):
        box.put(data(i))
    # A sender's lock-free append, just as the take has copied the batch (before a clear)
    # or has popped its first message.
    racing = lambda: deque.append(hooked, data("racing"))  # noqa: E731
    hooked.hooks = {"clear": racing, "popleft": racing}
    taken = payloads(box.take(10, timeout=WAIT))
    taken += payloads(box.take(10, timeout=WAIT))
    assert taken == [0, 1, 2, "racing"]


def test_a_put_that_a_drain_overtakes_is_refused_not_left_behind() -> None:
    box = Mailbox("box", 100)
    box.put(data(0))
    drained: list[Message] = []
    # The drain runs between the put's checks (open, room) and its append.
    box._data = _Hooked("append", lambda: drained.extend(box.drain()))
    with pytest.raises(MailboxClosed):
        box.put(data(1))
    assert len(box) == 0, "a message was left in a mailbox nobody reads"


class _Unequal:
    """A payload whose == raises, as a numpy array's does."""

    def __eq__(self, other: object) -> bool:
        raise ValueError("the truth value of an array is ambiguous")

    __hash__ = object.__hash__


@pytest.mark.parametrize("payloads", [("next", "next"), (_Unequal(), _Unequal())])
def test_two_puts_racing_a_drain_each_find_their_own_message(payloads: tuple[Any, Any]) -> None:
    # Both puts pass their checks, then: the first appends, the drain runs, the second
    # appends, the first re-checks. The first's message went with the drain (its sender
    # returns); the second's must come back to its sender (MailboxClosed), not be mistaken
    # for the first's because they are equal (or because comparing them raises).
    box = Mailbox("box", 100)
    first = Message(MessageType.DATA, "reader", "box", payloads[0])
    second = Message(MessageType.DATA, "reader", "box", payloads[1])
    second_at_append, go_second, second_appended, first_done = (threading.Event() for _ in range(4))
    drained: list[Message] = []

    class Racing(deque[Any]):
        def append(self, item: Any) -> None:
            if item is second:
                second_at_append.set()
                assert go_second.wait(WAIT)
                super().append(item)
                second_appended.set()
                assert first_done.wait(WAIT)  # the first's re-check runs first
                return
            super().append(item)
            if item is first:
                drained.extend(box.drain())
                go_second.set()
                assert second_appended.wait(WAIT)

    box._data = Racing()
    racer = Call(lambda: box.put(second))
    racer.start()
    assert second_at_append.wait(WAIT)
    try:
        box.put(first)  # returns: the drain has its message
    finally:
        first_done.set()
    racer.finish()
    assert [m is first for m in drained] == [True]
    assert isinstance(racer.error, MailboxClosed), "the second message was lost silently"
    assert len(box) == 0


@pytest.mark.parametrize("payloads", [("next", "next"), (_Unequal(), _Unequal())])
def test_two_puts_overtaken_by_a_drain_are_both_refused(payloads: tuple[Any, Any]) -> None:
    # Both puts pass their checks, the drain runs, then the second appends and the first
    # appends and re-checks: each finds its own message (not the other, equal or not
    # comparable) and takes it back; nothing stays in the drained mailbox.
    box = Mailbox("box", 100)
    first = Message(MessageType.DATA, "reader", "box", payloads[0])
    second = Message(MessageType.DATA, "reader", "box", payloads[1])
    # By identity: the two messages may be equal, so never dict keys.
    at_append = {id(first): threading.Event(), id(second): threading.Event()}
    go = {id(first): threading.Event(), id(second): threading.Event()}
    second_appended, first_done = threading.Event(), threading.Event()

    class Racing(deque[Any]):
        def append(self, item: Any) -> None:
            at_append[id(item)].set()
            assert go[id(item)].wait(WAIT)
            super().append(item)
            if item is second:
                second_appended.set()
                assert first_done.wait(WAIT)

    box._data = Racing()
    calls = [Call(lambda m=m: box.put(m)) for m in (first, second)]
    for call in calls:
        call.start()
    for event in at_append.values():
        assert event.wait(WAIT)
    assert box.drain() == []
    go[id(second)].set()
    assert second_appended.wait(WAIT)
    go[id(first)].set()
    calls[0].join(WAIT)
    first_done.set()
    for call in calls:
        call.finish()
        assert isinstance(call.error, MailboxClosed), call.error
    assert len(box) == 0


def test_a_put_landing_while_a_drain_empties_the_mailbox_is_drained() -> None:
    box = Mailbox("box", 100)
    for i in range(3):
        box.put(data(i))
    hooked = _Hooked("clear", lambda: None)
    hooked.extend(box._data)
    box._data = hooked
    # A lock-free put's append, as the drain has copied what was queued (before a clear) or
    # has taken the first message; that put then finds the mailbox drained and its message
    # taken, so it returns: the drain must have it.
    racing = lambda: deque.append(hooked, data("racing"))  # noqa: E731
    hooked.hooks = {"clear": racing, "popleft": racing}
    assert payloads(box.drain()) == [0, 1, 2, "racing"]
    assert len(box) == 0


def test_a_receiver_about_to_block_sees_a_put_made_before_it_registered() -> None:
    box = Mailbox("box", 100)

    class Waiting(_WaitQueue):
        # The lock-free put lands after the receiver found the mailbox empty and before it
        # is registered as waiting: that put sees no one to wake.
        def append(self, waiter: Any) -> None:
            if not box._data:
                deque.append(box._data, data("late"))
            super().append(waiter)

    box._not_empty = Waiting()
    call = Call(lambda: box.take(1))  # no timeout: a missed put would block it for good
    call.start()
    call.join(WAIT)
    stalled = call.is_alive()
    box.close()  # frees a stalled receiver (with the late message), so the thread ends
    call.finish()
    assert not stalled, "the receiver blocked with a message in its mailbox"
    assert payloads(call.result) == ["late"]


@pytest.mark.usefixtures("frequent_thread_switches")
@pytest.mark.parametrize("capacity", [64, 1_000_000])
def test_racing_puts_and_batched_takes_lose_nothing_and_keep_each_senders_order(
    capacity: int,
) -> None:
    box = Mailbox("box", capacity)
    senders, each = 4, 5000
    deepest: list[int] = []

    def send(sender: int) -> None:
        for i in range(each):
            box.put(data((sender, i)))

    threads = [threading.Thread(target=send, args=(s,), name=f"sender-{s}") for s in range(4)]
    for thread in threads:
        thread.start()
    got: list[tuple[int, int]] = []
    while len(got) < senders * each:
        deepest.append(len(box))
        got.extend(payloads(box.take(16, timeout=WAIT)))
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    for sender in range(senders):
        assert [i for s, i in got if s == sender] == list(range(each))
    assert len(box) == 0
    # Over capacity by at most one message per sender racing past the room check.
    assert max(deepest) <= capacity + senders


@pytest.mark.usefixtures("frequent_thread_switches")
def test_a_ping_pong_through_two_mailboxes_never_stalls() -> None:
    # A wake-up lost between a receiver's check and its block would leave both threads
    # waiting: the takes would time out.
    ping, pong = Mailbox("ping", 4), Mailbox("pong", 4)
    rounds = 5000

    def echo() -> None:
        for _ in range(rounds):
            pong.put(ping.take(1, timeout=WAIT)[0])

    thread = threading.Thread(target=echo, name="echo")
    thread.start()
    for i in range(rounds):
        ping.put(data(i))
        assert payloads(pong.take(1, timeout=WAIT)) == [i]
    thread.join(WAIT)
    assert not thread.is_alive()
