"""actord: an actor runtime for long-running Python daemons.

Actors are threads that share nothing and talk only through typed messages on one
`ThreadChannel`. Start with `ActorSystem`, subclass `Actor`, and hold `ActorRef`s.
"""

from .runtime.actor import Actor, ActorRef
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
