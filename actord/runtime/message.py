"""Messages and the runtime's own payloads.

`Message` is a frozen, slotted dataclass. Its `__init__` is written by hand: it stores each field
through the slot descriptor instead of `object.__setattr__`, which halves the cost of building a
message (the hottest allocation in the runtime) while keeping the instance immutable.
"""

from __future__ import annotations

import itertools
import time
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
class Message:
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

    def __init__(
        self,
        type: MessageType,
        sender: str,
        recipient: str,
        payload: Any,
        correlation_id: str | None = None,
        id: int | None = None,
        sent_ns: int | None = None,
    ) -> None:
        _set_type(self, type)
        _set_sender(self, sender)
        _set_recipient(self, recipient)
        _set_payload(self, payload)
        _set_correlation_id(self, correlation_id)
        _set_id(self, _next_id() if id is None else id)
        _set_sent_ns(self, _now_ns() if sent_ns is None else sent_ns)


def _slot_setter(name: str) -> Any:
    return Message.__dict__[name].__set__


_set_type = _slot_setter("type")
_set_sender = _slot_setter("sender")
_set_recipient = _slot_setter("recipient")
_set_payload = _slot_setter("payload")
_set_correlation_id = _slot_setter("correlation_id")
_set_id = _slot_setter("id")
_set_sent_ns = _slot_setter("sent_ns")


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
