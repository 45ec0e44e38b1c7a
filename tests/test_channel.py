"""ThreadChannel: registration, routing, dead letters, request/reply, pub/sub and closing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from actord import (
    DEAD_LETTERS,
    ActorDead,
    AskTimeout,
    BadPayload,
    ChannelClosed,
    DeadLetter,
    DeadLetterReason,
    ErrorCode,
    InvalidArgument,
    MailboxClosed,
    MailboxFull,
    MessageType,
    NameTaken,
    ThreadChannel,
    UnknownActor,
)

from .conftest import WAIT, Call

BLOCKED = 0.05  # how long a blocked call must stay blocked before the test unblocks it


@dataclass(frozen=True)
class Point:
    x: int
    y: int


def start(fn: Callable[[], Any]) -> Call:
    call = Call(fn)
    call.start()
    return call


def start_blocked(fn: Callable[[], Any]) -> Call:
    """Start `fn` on a thread and check that it is still blocked a little later."""
    call = start(fn)
    call.join(BLOCKED)
    assert call.is_alive(), f"expected the call to block (result={call.result!r}, {call.error!r})"
    return call


def reasons(channel: ThreadChannel) -> list[DeadLetterReason]:
    return [letter.reason for letter in channel.dead_letters()]


def serve_one(channel: ThreadChannel, name: str, answer: Callable[[Any], Any]) -> Call:
    """A thread that receives one request on `name` and replies with `answer(payload)`."""

    def serve() -> None:
        [request] = channel.receive(name, timeout=WAIT)
        channel.reply(request, answer(request.payload), sender=name)

    return start(serve)


# -- registration ---------------------------------------------------------------------------


def test_register_creates_a_mailbox(channel: ThreadChannel) -> None:
    channel.register("box", capacity=7)
    assert "box" in channel
    assert channel.names() == ("box",)
    assert channel.capacity("box") == 7


def test_register_twice_raises_name_taken(channel: ThreadChannel) -> None:
    channel.register("box")
    with pytest.raises(NameTaken):
        channel.register("box")


@pytest.mark.parametrize("capacity", [0, -1])
def test_register_invalid_capacity_raises_invalid_argument(
    channel: ThreadChannel, capacity: int
) -> None:
    with pytest.raises(InvalidArgument):
        channel.register("box", capacity=capacity)
    assert "box" not in channel


@pytest.mark.parametrize("name", ["", "$box"])
def test_register_invalid_name_raises_invalid_argument(channel: ThreadChannel, name: str) -> None:
    with pytest.raises(InvalidArgument):
        channel.register(name)
    assert name not in channel


def test_unregister_removes_the_name(channel: ThreadChannel) -> None:
    channel.register("box")
    assert channel.unregister("box") == 0
    assert "box" not in channel
    channel.register("box")  # the name is free again


def test_unregister_unknown_raises_unknown_actor(channel: ThreadChannel) -> None:
    with pytest.raises(UnknownActor):
        channel.unregister("ghost")


def test_unregister_dead_letters_the_leftovers(channel: ThreadChannel) -> None:
    channel.register("box")
    for i in range(3):
        channel.send("box", i, sender="tester")
    assert channel.unregister("box") == 3
    assert channel.dead_letter_counts() == {DeadLetterReason.STOPPED: 3}
    assert [letter.message.payload for letter in channel.dead_letters()] == [0, 1, 2]


# -- sending and dead letters ---------------------------------------------------------------


def test_send_to_unknown_recipient_is_a_dead_letter(channel: ThreadChannel) -> None:
    sent = channel.send("ghost", "hello", sender="tester")
    assert channel.dead_letter_counts() == {DeadLetterReason.UNKNOWN_RECIPIENT: 1}
    assert channel.dead_letters() == (DeadLetter(sent, DeadLetterReason.UNKNOWN_RECIPIENT),)


def test_send_to_closed_mailbox_is_a_stopped_dead_letter(channel: ThreadChannel) -> None:
    channel.register("box")
    channel.close_mailbox("box")
    sent = channel.send("box", "hello", sender="tester")
    assert channel.dead_letter_counts() == {DeadLetterReason.STOPPED: 1}
    assert channel.dead_letters() == (DeadLetter(sent, DeadLetterReason.STOPPED),)


@pytest.mark.parametrize("payload", [{"a": 1}, [1], {1}, bytearray(b"x")], ids=type)
def test_mutable_payload_raises_bad_payload(channel: ThreadChannel, payload: object) -> None:
    channel.register("box")
    with pytest.raises(BadPayload) as caught:
        channel.send("box", payload, sender="tester")
    assert caught.value.code is ErrorCode.BAD_PAYLOAD
    assert channel.depth("box") == 0


@pytest.mark.parametrize("payload", [(1, 2), Point(1, 2)], ids=type)
def test_immutable_payload_is_delivered(channel: ThreadChannel, payload: object) -> None:
    channel.register("box")
    channel.send("box", payload, sender="tester")
    [received] = channel.receive("box", timeout=WAIT)
    assert received.payload == payload
    assert received.sender == "tester"


def test_send_timeout_on_full_mailbox_raises_mailbox_full(channel: ThreadChannel) -> None:
    channel.register("box", capacity=1)
    channel.send("box", "a", sender="tester")
    with pytest.raises(MailboxFull) as caught:
        channel.send("box", "b", sender="tester", timeout=0.01)
    assert caught.value.message.payload == "b"
    assert channel.depth("box") == 1


# -- request / reply ------------------------------------------------------------------------


def test_request_future_is_resolved_by_reply(channel: ThreadChannel) -> None:
    channel.register("svc")
    server = serve_one(channel, "svc", lambda payload: ("echo", payload))
    future = channel.request("svc", "ping", sender="client")
    assert future.result(WAIT) == ("echo", "ping")
    server.finish()
    assert server.error is None
    assert channel.pending_requests() == 0


def test_request_timeout_fails_future_and_late_reply_is_dead_letter(
    channel: ThreadChannel,
) -> None:
    channel.register("svc")
    future = channel.request("svc", "ping", sender="client", timeout=0.05)
    assert isinstance(future.exception(WAIT), AskTimeout)
    [request] = channel.receive("svc", timeout=WAIT)
    channel.reply(request, "too late", sender="svc")
    [letter] = channel.dead_letters()
    assert letter.reason is DeadLetterReason.LATE_REPLY
    assert letter.message.type is MessageType.RESPONSE
    assert letter.message.correlation_id == request.correlation_id
    assert letter.message.payload == "too late"


def test_ask_returns_the_reply_payload(channel: ThreadChannel) -> None:
    channel.register("svc")
    server = serve_one(channel, "svc", lambda payload: payload * 2)
    assert channel.ask("svc", 21, sender="client", timeout=WAIT) == 42
    server.finish()
    assert server.error is None


def test_ask_unknown_recipient_raises_actor_dead(channel: ThreadChannel) -> None:
    with pytest.raises(ActorDead):
        channel.ask("ghost", "ping", sender="client", timeout=WAIT)
    assert channel.dead_letter_counts() == {DeadLetterReason.UNKNOWN_RECIPIENT: 1}
    assert channel.pending_requests() == 0


def test_fail_dead_letters_the_message_and_fails_the_request(channel: ThreadChannel) -> None:
    channel.register("svc")
    future = channel.request("svc", "work", sender="client")
    [request] = channel.receive("svc", timeout=WAIT)
    error = RuntimeError("boom")
    channel.fail(request, error)
    assert future.exception(WAIT) is error
    assert channel.dead_letters() == (
        DeadLetter(request, DeadLetterReason.FAILED, "RuntimeError: boom"),
    )


def test_a_sent_request_cannot_be_cancelled_and_still_settles(channel: ThreadChannel) -> None:
    channel.register("svc")
    answered = channel.request("svc", "ping", sender="client")
    expiring = channel.request("svc", "slow", sender="client", timeout=0.05)
    assert answered.cancel() is False
    assert expiring.cancel() is False
    first, _ = channel.receive("svc", max_items=2, timeout=WAIT)
    channel.reply(first, "pong", sender="svc")
    assert answered.result(WAIT) == "pong"
    with pytest.raises(AskTimeout):
        expiring.result(WAIT)
    later = threading.Event()
    channel.timers.call_later(0.0, later.set)  # the timer thread survived the expiry
    assert later.wait(WAIT)
    assert channel.pending_requests() == 0


def test_a_reply_cancels_the_request_expiry_timer(channel: ThreadChannel) -> None:
    channel.register("svc")
    future = channel.request("svc", "ping", sender="client", timeout=WAIT)
    assert channel.timers.pending() == 1
    [request] = channel.receive("svc", timeout=WAIT)
    channel.reply(request, "pong", sender="svc")
    assert future.result(WAIT) == "pong"
    assert channel.timers.pending() == 0


# -- publish / subscribe --------------------------------------------------------------------


def test_publish_delivers_events_to_each_subscriber_in_order(channel: ThreadChannel) -> None:
    channel.register("s1")
    channel.register("s2")
    channel.subscribe("news", "s1")
    channel.subscribe("news", "s2")
    assert channel.publish("news", 1) == 2
    assert channel.publish("news", 2) == 2
    for name in ("s1", "s2"):
        events = channel.receive(name, max_items=10, timeout=WAIT)
        assert [(m.type, m.sender, m.payload) for m in events] == [
            (MessageType.EVENT, "news", 1),
            (MessageType.EVENT, "news", 2),
        ]


def test_unsubscribe_stops_delivery(channel: ThreadChannel) -> None:
    channel.register("s1")
    channel.register("s2")
    channel.subscribe("news", "s1")
    channel.subscribe("news", "s2")
    channel.unsubscribe("news", "s2")
    assert channel.publish("news", "only s1") == 1
    assert channel.depth("s2") == 0
    assert [m.payload for m in channel.receive("s1", max_items=10, timeout=WAIT)] == ["only s1"]


def test_dead_letter_subscribers_receive_dead_letter_events(channel: ThreadChannel) -> None:
    channel.register("watcher")
    channel.subscribe(DEAD_LETTERS, "watcher")
    sent = channel.send("ghost", "hello", sender="tester")
    [event] = channel.receive("watcher", timeout=WAIT)
    assert event.type is MessageType.EVENT
    assert event.sender == DEAD_LETTERS
    assert event.payload == DeadLetter(sent, DeadLetterReason.UNKNOWN_RECIPIENT)


def test_dead_letter_notice_to_stopped_subscriber_is_counted_not_republished(
    channel: ThreadChannel,
) -> None:
    channel.register("watcher")
    channel.subscribe(DEAD_LETTERS, "watcher")
    channel.close_mailbox("watcher")
    channel.send("ghost", "hello", sender="tester")  # would recurse forever if re-published
    assert channel.dead_letter_counts() == {
        DeadLetterReason.UNKNOWN_RECIPIENT: 1,
        DeadLetterReason.STOPPED: 1,
    }
    assert reasons(channel) == [DeadLetterReason.UNKNOWN_RECIPIENT]


def test_dead_letter_ring_is_bounded() -> None:
    channel = ThreadChannel(dead_letter_capacity=3)
    try:
        for i in range(5):
            channel.send("ghost", i, sender="tester")
        assert [letter.message.payload for letter in channel.dead_letters()] == [2, 3, 4]
        assert channel.dead_letter_counts() == {DeadLetterReason.UNKNOWN_RECIPIENT: 5}
    finally:
        channel.close()


# -- closing --------------------------------------------------------------------------------


def test_close_wakes_a_blocked_sender_with_channel_closed(channel: ThreadChannel) -> None:
    channel.register("box", capacity=1)
    channel.send("box", "a", sender="tester")
    sender = start_blocked(lambda: channel.send("box", "b", sender="tester"))
    channel.close()
    sender.finish()
    assert isinstance(sender.error, ChannelClosed)
    assert isinstance(sender.error, MailboxClosed)


def test_close_wakes_a_blocked_receiver_with_channel_closed(channel: ThreadChannel) -> None:
    channel.register("box")
    receiver = start_blocked(lambda: channel.receive("box"))
    channel.close()
    receiver.finish()
    assert isinstance(receiver.error, ChannelClosed)


def test_close_fails_pending_requests_with_channel_closed(channel: ThreadChannel) -> None:
    channel.register("svc")
    future = channel.request("svc", "ping", sender="client")
    channel.close()
    assert isinstance(future.exception(WAIT), ChannelClosed)
    assert channel.pending_requests() == 0


@pytest.mark.parametrize("recipient", ["box", "ghost"])
def test_send_after_close_raises_channel_closed(channel: ThreadChannel, recipient: str) -> None:
    channel.register("box")
    channel.close()
    with pytest.raises(ChannelClosed):
        channel.send(recipient, "late", sender="tester")
    assert channel.dead_letter_counts() == {}


@pytest.mark.parametrize("timeout", [None, 1.0])
def test_request_after_close_raises_and_leaves_nothing_pending(
    channel: ThreadChannel, timeout: float | None
) -> None:
    channel.register("svc")
    channel.close()
    with pytest.raises(ChannelClosed):
        channel.request("svc", "ping", sender="client", timeout=timeout)
    assert channel.pending_requests() == 0


# -- concurrency ----------------------------------------------------------------------------


@pytest.mark.usefixtures("frequent_thread_switches")
def test_routing_reads_survive_concurrent_register_and_unregister(
    channel: ThreadChannel,
) -> None:
    for i in range(8):
        channel.register(f"other-{i}")  # "stable" is not the first entry of the table
    channel.register("stable")
    barrier = threading.Barrier(2, timeout=WAIT)
    churned = threading.Event()

    def churn() -> None:
        barrier.wait()
        try:
            for i in range(3000):
                name = f"tmp-{i % 8}"
                channel.register(name)
                channel.unregister(name)
        finally:
            churned.set()

    def read() -> int:
        barrier.wait()
        reads = 0
        while not churned.is_set():  # bounded: churn runs a fixed number of iterations
            assert "stable" in channel
            channel.send("stable", reads, sender="reader")
            [message] = channel.receive("stable", timeout=WAIT)
            assert message.payload == reads
            reads += 1
        return reads

    churner, reader = start(churn), start(read)
    churner.finish()
    reader.finish()
    assert (churner.error, reader.error) == (None, None)
    assert reader.result > 0
    assert channel.dead_letter_counts() == {}
    assert "stable" in channel.names()


def test_publish_with_a_timeout_dead_letters_a_full_subscriber_and_goes_on(
    channel: ThreadChannel,
) -> None:
    channel.register("full", capacity=1)
    channel.register("free")
    channel.subscribe("news", "full")
    channel.subscribe("news", "free")
    channel.send("full", "filler", sender="tester")
    assert channel.publish("news", "update", timeout=0) == 1
    assert channel.receive("free", timeout=WAIT)[0].payload == "update"
    (letter,) = channel.dead_letters()
    assert letter.reason is DeadLetterReason.MAILBOX_FULL
    assert letter.message.recipient == "full"
