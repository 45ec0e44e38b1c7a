"""Exceptions raised by the runtime, each with a stable machine-readable code.

Closing is reported by exception (`ChannelClosed`, `MailboxClosed`, `ActorDead`), never by a
`None` sentinel. The codes are part of the public contract: the control socket sends them to
clients, and they never change meaning once released.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """Stable codes carried by every `ActordError`: the runtime's own, and those the control
    protocol answers with (`{code, message}`; the README lists them). One enum for both:
    the control layer maps a runtime code to a protocol one where they differ."""

    MAILBOX_CLOSED = "mailbox_closed"
    CHANNEL_CLOSED = "channel_closed"
    ACTOR_DEAD = "actor_dead"
    UNKNOWN_ACTOR = "unknown_actor"
    NAME_TAKEN = "name_taken"
    MAILBOX_FULL = "mailbox_full"
    ASK_TIMEOUT = "ask_timeout"
    BAD_PAYLOAD = "bad_payload"
    STOP_TIMEOUT = "stop_timeout"
    INVALID_ARGUMENT = "invalid_argument"
    STOPPING = "stopping"
    # The control protocol's answers.
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    BUSY = "busy"
    INVALID_PATH = "invalid_path"
    CONFLICT = "conflict"
    INTERNAL = "internal"
    UNKNOWN_METHOD = "unknown_method"
    TOO_LARGE = "too_large"
    UNAVAILABLE = "unavailable"  # a resource outside the daemon (a Ray cluster) is unreachable


class ExitCode(IntEnum):
    """How `actord` and `actorctl` end (the process's exit status)."""

    OK = 0
    FAILED = 1  # actorctl: the command failed; actord: an escalation, or a failed start
    USAGE = 2  # a bad flag or config: nothing was done
    NOT_RUNNING = 3  # actorctl: no daemon answers on the socket


class ActordError(Exception):
    """Base class of every error the runtime raises on purpose."""

    code: ErrorCode = ErrorCode.INVALID_ARGUMENT


class Refused(ActordError):
    """A request refused with a stable `code`, chosen where it is raised (a bad frame, a
    path outside the roots, a busy store): the control socket answers `{code, message}`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class MailboxClosed(ActordError):
    """The mailbox no longer accepts or yields messages (its actor is stopping or stopped)."""

    code = ErrorCode.MAILBOX_CLOSED


class ChannelClosed(MailboxClosed):
    """The whole channel is closed: every mailbox is closed with it."""

    code = ErrorCode.CHANNEL_CLOSED


class ActorDead(ActordError):
    """The actor a request was addressed to is stopped, failed or never existed."""

    code = ErrorCode.ACTOR_DEAD


class UnknownActor(ActordError, LookupError):
    """No actor is registered under that name."""

    code = ErrorCode.UNKNOWN_ACTOR


class NameTaken(ActordError):
    """An actor or mailbox with that name is already registered."""

    code = ErrorCode.NAME_TAKEN


class MailboxFull(ActordError, TimeoutError):
    """A send waited for room in a full mailbox until its timeout ran out.

    The message was not enqueued; it stays with the caller in `message`.
    """

    code = ErrorCode.MAILBOX_FULL

    def __init__(self, text: str, message: object = None) -> None:
        super().__init__(text)
        self.message = message


class AskTimeout(ActordError, TimeoutError):
    """No reply arrived before the request's timeout; a later reply becomes a dead letter."""

    code = ErrorCode.ASK_TIMEOUT


class BadPayload(ActordError, TypeError):
    """A payload is a mutable container (dict, list, set, bytearray): actors share nothing."""

    code = ErrorCode.BAD_PAYLOAD


class StopTimeout(ActordError):
    """Some actor threads did not finish before the stop deadline (stuck inside `handle`).

    `stuck` names each one and what it was doing (the message type it held, or its hook).
    """

    code = ErrorCode.STOP_TIMEOUT

    def __init__(self, text: str, stuck: tuple[str, ...] = ()) -> None:
        super().__init__(text)
        self.stuck = stuck


class ActorStopping(ActordError):
    """The calling actor (or the whole system) is stopping: a blocked send, ask or receive
    was cut short, or a spawn came after the stop began. The receive loop treats it as a
    stop, never as a failure."""

    code = ErrorCode.STOPPING


class InvalidArgument(ActordError, ValueError):
    """An argument is out of range (a negative capacity, a pool of size zero, ...)."""

    code = ErrorCode.INVALID_ARGUMENT
