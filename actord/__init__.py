"""actord: an actor runtime for long-running Python daemons.

Actors are threads that share nothing and talk only through typed messages on one
`ThreadChannel`. Start with `ActorSystem`, subclass `Actor`, and hold `ActorRef`s.

The names below are loaded on first use (PEP 562): `import actord` alone is nearly free,
so `actord run` can install its signal handlers before anything heavy is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runtime.actor import Actor, ActorRef
    from .runtime.async_actor import AsyncActor
    from .runtime.channel import DEAD_LETTERS, ThreadChannel
    from .runtime.clock import Clock, SystemClock
    from .runtime.errors import (
        ActorDead,
        ActordError,
        ActorStopping,
        AskTimeout,
        BadPayload,
        ChannelClosed,
        ErrorCode,
        InvalidArgument,
        MailboxClosed,
        MailboxFull,
        NameTaken,
        StopTimeout,
        UnknownActor,
    )
    from .runtime.fair import FairKeyed
    from .runtime.logctx import LOG_FORMAT
    from .runtime.message import (
        AdminCommand,
        Control,
        ControlKind,
        DeadLetter,
        DeadLetterReason,
        Message,
        MessageType,
        Pong,
    )
    from .runtime.stats import ActorState, ActorStats, Histogram
    from .runtime.supervisor import Decision, Escalation, RestartPolicy, Supervisor
    from .runtime.system import ActorSystem
    from .runtime.timers import Timer, TimerService

__version__ = "0.1.0"

# Where each public name lives (a module of the runtime).
_EXPORTS: dict[str, str] = {
    "Actor": ".runtime.actor",
    "ActorRef": ".runtime.actor",
    "AsyncActor": ".runtime.async_actor",
    "DEAD_LETTERS": ".runtime.channel",
    "ThreadChannel": ".runtime.channel",
    "Clock": ".runtime.clock",
    "SystemClock": ".runtime.clock",
    "ActorDead": ".runtime.errors",
    "ActordError": ".runtime.errors",
    "ActorStopping": ".runtime.errors",
    "AskTimeout": ".runtime.errors",
    "BadPayload": ".runtime.errors",
    "ChannelClosed": ".runtime.errors",
    "ErrorCode": ".runtime.errors",
    "InvalidArgument": ".runtime.errors",
    "MailboxClosed": ".runtime.errors",
    "MailboxFull": ".runtime.errors",
    "NameTaken": ".runtime.errors",
    "StopTimeout": ".runtime.errors",
    "UnknownActor": ".runtime.errors",
    "FairKeyed": ".runtime.fair",
    "LOG_FORMAT": ".runtime.logctx",
    "AdminCommand": ".runtime.message",
    "Control": ".runtime.message",
    "ControlKind": ".runtime.message",
    "DeadLetter": ".runtime.message",
    "DeadLetterReason": ".runtime.message",
    "Message": ".runtime.message",
    "MessageType": ".runtime.message",
    "Pong": ".runtime.message",
    "ActorState": ".runtime.stats",
    "ActorStats": ".runtime.stats",
    "Histogram": ".runtime.stats",
    "Decision": ".runtime.supervisor",
    "Escalation": ".runtime.supervisor",
    "RestartPolicy": ".runtime.supervisor",
    "Supervisor": ".runtime.supervisor",
    "ActorSystem": ".runtime.system",
    "Timer": ".runtime.timers",
    "TimerService": ".runtime.timers",
}

__all__ = [
    "DEAD_LETTERS",
    "LOG_FORMAT",
    "Actor",
    "ActorDead",
    "ActorRef",
    "ActorState",
    "ActorStats",
    "ActorStopping",
    "ActorSystem",
    "ActordError",
    "AdminCommand",
    "AskTimeout",
    "AsyncActor",
    "BadPayload",
    "ChannelClosed",
    "Clock",
    "Control",
    "ControlKind",
    "DeadLetter",
    "DeadLetterReason",
    "Decision",
    "ErrorCode",
    "Escalation",
    "FairKeyed",
    "Histogram",
    "InvalidArgument",
    "MailboxClosed",
    "MailboxFull",
    "Message",
    "MessageType",
    "NameTaken",
    "Pong",
    "RestartPolicy",
    "StopTimeout",
    "Supervisor",
    "SystemClock",
    "ThreadChannel",
    "Timer",
    "TimerService",
    "UnknownActor",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'actord' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next lookup is a plain one
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
