"""Log line formats: built-in patterns with named groups, and user patterns.

Every pattern is matched against one decoded line (without its line ending). The named groups
become the fields of the JSON record; a group called ``level`` is counted per value in the
job's summary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from actord.runtime.errors import InvalidArgument

__all__ = ["BUILTIN_FORMATS", "LogFormat", "resolve_format"]

BUILTIN_FORMATS: dict[str, str] = {
    # The slides' format: 2026-11-25 12:00:00 [INFO] message
    "seed": (
        r"(?P<timestamp>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) \[(?P<level>\w+)\] (?P<message>.*)"
    ),
    # Python logging, asctime with milliseconds:
    # "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
    "python": (
        r"(?P<timestamp>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}) - (?P<logger>\S+) - "
        r"(?P<level>[A-Z]+) - (?P<message>.*)"
    ),
    # RFC 3164: <PRI>Mmm dd hh:mm:ss host tag[pid]: message (PRI optional, as files store it)
    "syslog": (
        r"(?:<(?P<pri>\d{1,3})>)?(?P<timestamp>[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}) "
        r"(?P<host>\S+) (?P<tag>[^:\[\s]+)(?:\[(?P<pid>\d+)\])?: (?P<message>.*)"
    ),
    # Apache 2.4 error log: [time] [module:level] [pid N:tid M] [client addr] message
    "apache-error": (
        r"\[(?P<timestamp>[^\]]+)\] \[(?:(?P<module>[^:\]]+):)?(?P<level>[^\]]+)\]"
        r"(?: \[pid (?P<pid>\d+)(?::tid (?P<tid>\d+))?\])?"
        r"(?: \[client (?P<client>[^\]]+)\])? (?P<message>.*)"
    ),
    # NCSA common log format: host ident user [time] "request" status size
    "common": (
        r"(?P<host>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<timestamp>[^\]]+)\] "
        r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<size>\d+|-)'
    ),
}


@dataclass(frozen=True, slots=True)
class LogFormat:
    """A named pattern, validated: it compiles and has at least one named group."""

    name: str
    pattern: str

    def compile(self) -> re.Pattern[str]:
        return re.compile(self.pattern)


def resolve_format(name: str | None = None, pattern: str | None = None) -> LogFormat:
    """The built-in format `name`, or a user `pattern` (a regex with named groups)."""
    if pattern is not None:
        if name not in (None, "custom"):
            raise InvalidArgument("give either a format name or a pattern, not both")
        try:
            compiled = re.compile(pattern)
        except re.error as error:
            raise InvalidArgument(f"invalid pattern: {error}") from None
        if not compiled.groupindex:
            raise InvalidArgument("a pattern needs at least one named group, as (?P<name>...)")
        if "line" in compiled.groupindex:
            raise InvalidArgument("the group name 'line' is reserved for the line number")
        return LogFormat("custom", pattern)
    chosen = name or "seed"
    if chosen not in BUILTIN_FORMATS:
        known = ", ".join(sorted(BUILTIN_FORMATS))
        raise InvalidArgument(f"unknown log format {chosen!r} (built-in: {known})")
    return LogFormat(chosen, BUILTIN_FORMATS[chosen])
