"""Mailbox: FIFO, batching, the control lane, backpressure, timeouts and closing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from actord import Control, ControlKind, MailboxClosed, MailboxFull, Message, MessageType
from actord.runtime.mailbox import Mailbox

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
