"""Messages and the runtime's own payloads.

`Message` is a frozen, slotted dataclass, built the fast way: a frozen class's `__setattr__`
raises, so its fields can only be stored through a slower path (`object.__setattr__`, or
each slot's descriptor called by hand). `_Draft` has the very same slots and plain
attribute stores (the interpreter's fast path); its `__init__` fills them and then turns
the instance into a `Message` (`__class__` assignment, checked by CPython for an identical
layout). The result is an ordinary, immutable `Message`: 260 ns to build instead of 490
(the hottest allocation in the runtime: one per send). `new_message` is that builder, for
the channel's hot paths; `Message(...)` goes through it too.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any

from .errors import BadPayload

__all__ = [
    "AdminCommand",
    "Control",
    "ControlKind",
    "DeadLetter",
    "DeadLetterReason",
    "Message",
    "MessageType",
    "Pong",
    "check_payload",
    "new_message",
]


class MessageType(IntEnum):
    """What a message is for. An IntEnum so per-type counters can be plain list slots."""

    COMMAND = 1
    DATA = 2
    CONTROL = 3
    RESPONSE = 4
    EVENT = 5


_next_id = itertools.count(1).__next__
_now_ns = time.monotonic_ns


@dataclass(frozen=True, slots=True, init=False)
class Message:  # final: `new_message` builds this exact class
    """One immutable message on the channel.

    `id` is unique within the process; `sent_ns` is `time.monotonic_ns()` at construction, from
    which the runtime measures queue wait. `correlation_id` is set only on requests and replies.
    """

    type: MessageType
    sender: str
    recipient: str
    payload: Any
    correlation_id: str | None = None
    id: int = field(default=0, compare=False)
    sent_ns: int = field(default=0, compare=False)

    def __new__(
        cls,
        type: MessageType,
        sender: str,
        recipient: str,
        payload: Any,
        correlation_id: str | None = None,
        id: int | None = None,
        sent_ns: int | None = None,
    ) -> Message:
        message = new_message(type, sender, recipient, payload, correlation_id)
        # Given (dataclasses.replace passes every field): kept, as the dataclass's own
        # __init__ would. The slow path: only the fast builder's two fields are redone.
        if id is not None:
            object.__setattr__(message, "id", id)
        if sent_ns is not None:
            object.__setattr__(message, "sent_ns", sent_ns)
        return message

    def __getnewargs__(self) -> tuple[MessageType, str, str, Any, str | None]:
        # pickle and copy rebuild through __new__ and then restore every field (id and
        # sent_ns too) with the dataclass's __setstate__.
        return (self.type, self.sender, self.recipient, self.payload, self.correlation_id)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The builder makes this exact class: a subclass's instances would silently be
        # plain Messages.
        raise TypeError("Message cannot be subclassed: send a payload type of your own")


class _Draft:
    """A `Message` being built (see the module's doc): never seen outside `new_message`."""

    __slots__ = Message.__slots__  # the same layout, in order

    def __init__(
        self,
        type: MessageType,
        sender: str,
        recipient: str,
        payload: Any,
        correlation_id: str | None = None,
    ) -> None:
        self.type = type
        self.sender = sender
        self.recipient = recipient
        self.payload = payload
        self.correlation_id = correlation_id
        self.id = _next_id()
        self.sent_ns = _now_ns()
        self.__class__ = Message  # type: ignore[assignment]  # now frozen for good


# Typed as what it returns: a Message (its class once __init__ has run).
new_message: Callable[[MessageType, str, str, Any, str | None], Message] = _Draft  # type: ignore[assignment]


# Mutable builtin containers may not cross an actor boundary: the receiver would share them.
_MUTABLE_TYPES = frozenset({dict, list, set, bytearray})


def check_payload(payload: object) -> None:
    """Raise `BadPayload` if `payload` is a mutable builtin container (checked at the top level)."""
    if type(payload) in _MUTABLE_TYPES:
        raise BadPayload(
            f"payload of type {type(payload).__name__} is mutable; send a frozen dataclass or tuple"
        )


class ControlKind(Enum):
    """Runtime control requests, served from the control lane before any data."""

    STOP = "stop"  # stop now; what is still queued becomes dead letters
    RETIRE = "retire"  # one pool member leaves (a pool shrinks); nothing queued is touched
    PING = "ping"  # liveness: the receive loop itself answers with `Pong`
    RESTART = "restart"  # replace the instance with a fresh one; the mailbox is untouched


@dataclass(frozen=True, slots=True)
class Control:
    """Payload of a CONTROL message."""

    kind: ControlKind


@dataclass(frozen=True, slots=True)
class Pong:
    """Reply to a PING: proof that the actor's receive loop is turning."""

    actor: str
    native_thread_id: int


Scalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class AdminCommand:
    """An operator's message to an actor (``actorctl send``): a command name and flat
    arguments. The control socket delivers only the commands the actor's class declares in
    `Actor.commands`; one sent in-process that it does not know it ignores or fails, as it
    likes."""

    command: str
    args: tuple[tuple[str, Scalar], ...] = ()

    def arg(self, name: str, default: Scalar = None) -> Scalar:
        return dict(self.args).get(name, default)


class DeadLetterReason(Enum):
    """Why a message was not handled."""

    UNKNOWN_RECIPIENT = "unknown_recipient"
    STOPPED = "stopped"  # recipient stopped, or stopped before reaching it
    FAILED = "failed"  # the handler raised while handling it
    LATE_REPLY = "late_reply"  # a RESPONSE whose request had already timed out
    MAILBOX_FULL = "mailbox_full"  # a non-blocking send (timer tick, event) found no room


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that was not handled, with the reason and the error if a handler raised."""

    message: Message
    reason: DeadLetterReason
    error: str | None = None
