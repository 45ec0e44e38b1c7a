"""How actorctl shows figures to people: durations, sizes, rates, counts, local times, tables
and colour. Scripts use ``--json``, which shows the wire's values untouched.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Final, TextIO

__all__ = [
    "Colour",
    "Column",
    "Output",
    "OutputClosed",
    "count",
    "duration",
    "local_time",
    "pairs",
    "parse_time",
    "rate",
    "size",
    "table",
    "use_colour",
]


class OutputClosed(Exception):
    """Whoever read actorctl's output went away (``actorctl jobs | head -1``)."""


class Output:
    """actorctl's stdout: a closed reader ends the command quietly (`OutputClosed`) instead of
    being taken for a broken connection to the daemon."""

    def __init__(self, stream: TextIO, *, colour: bool | None = None) -> None:
        self.stream = stream
        self.tty = _isatty(stream)
        self.colour = use_colour(stream) if colour is None else colour

    def write(self, text: str) -> None:
        try:
            self.stream.write(text)
        except BrokenPipeError:
            raise OutputClosed from None

    def line(self, text: str = "") -> None:
        self.write(text + "\n")

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            raise OutputClosed from None

    def paint(self, text: str, colour: Colour | None) -> str:
        if not self.colour or colour is None:
            return text
        return f"\x1b[{colour.value}m{text}\x1b[0m"


class Colour(Enum):
    """SGR codes for the few things actorctl colours: a job's or an actor's state."""

    GREEN = "32"
    RED = "31"
    YELLOW = "33"
    CYAN = "36"
    DIM = "2"
    BOLD = "1"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return False


def use_colour(stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, never when ``NO_COLOR`` is set (https://no-color.org) or
    the terminal is ``dumb``."""
    env = os.environ if env is None else env
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    return _isatty(stream)


# -- figures -----------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """``16µs``, ``403ms``, ``1.2s``, ``3m04s``, ``2h05m``, ``3d04h``; ``-`` for none."""
    if seconds is None or math.isnan(seconds):
        return "-"
    if seconds < 0:
        return "0ms"  # two clocks a hair apart: never a negative time for people
    if seconds < 0.0009995:  # would round to 1000µs: shown as 1.0ms instead
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 0.01:
        return f"{seconds * 1e3:.1f}ms"
    if seconds < 0.9995:  # would round to 1000ms: shown as 1.0s instead
        return f"{seconds * 1e3:.0f}ms"
    if seconds < 59.95:  # would round to 60.0s: shown as 1m00s instead
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


_UNITS: Final = ("KiB", "MiB", "GiB", "TiB", "PiB")


def size(nbytes: float | None) -> str:
    """``512 B``, ``54.5 MiB``: binary units, one decimal."""
    if nbytes is None:
        return "-"
    if abs(nbytes) < 1024:
        return f"{nbytes:.0f} B"
    value = float(nbytes)
    for unit in _UNITS:
        value /= 1024
        if abs(value) < 1023.95 or unit == _UNITS[-1]:  # 1023.96 KiB is shown as 1.0 MiB
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def rate(nbytes: float, seconds: float) -> str:
    """Bytes over a time as ``12.3 MiB/s``; ``-`` when the time is too short to say."""
    if seconds <= 0:
        return "-"
    return f"{size(nbytes / seconds)}/s"


def count(number: int | float | None) -> str:
    """``300,000``: thousands separated, as people read them."""
    if number is None:
        return "-"
    if isinstance(number, float) and not number.is_integer():
        return f"{number:,.1f}"
    return f"{int(number):,}"


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 time from the daemon (``2026-12-01T03:20:18.123Z``), or None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def local_time(value: object, now: datetime | None = None) -> str:
    """A daemon time in this machine's local time: ``04:55:35`` today, ``2026-11-30 23:10``
    on another day (as ``ls -l`` shortens old dates); ``-`` for none."""
    moment = parse_time(value)
    if moment is None:
        return "-" if value is None else str(value)
    local = moment.astimezone()
    today = (now or datetime.now().astimezone()).date()
    if local.date() == today:
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M")


# -- tables ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its header, how a row's cell reads, and (optionally) its colour."""

    header: str
    cell: Callable[[Mapping[str, Any]], str]
    colour: Callable[[Mapping[str, Any]], Colour | None] | None = None
    right: bool = False  # figures line up on the right


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column], out: Output) -> None:
    """Rows under upper-case headers, two spaces apart; padded before being coloured, so the
    escape codes never push a column out of line."""
    cells = [[c.cell(row) for c in columns] for row in rows]
    colours = [[c.colour(row) if c.colour else None for c in columns] for row in rows]
    widths = [max([len(c.header), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str], paint: Sequence[Colour | None]) -> str:
        parts = []
        for value, width, column, colour in zip(values, widths, columns, paint, strict=True):
            pad = " " * (width - len(value))
            shown = out.paint(value, colour)
            parts.append(pad + shown if column.right else shown + pad)
        return "  ".join(parts).rstrip()

    out.line(line([c.header for c in columns], [None] * len(columns)))
    for row, paint in zip(cells, colours, strict=True):
        out.line(line(row, paint))


def pairs(rows: Sequence[tuple[str, str]], out: Output) -> None:
    """``key   value`` lines, the values lined up."""
    width = max((len(key) for key, _ in rows), default=0)
    for key, value in rows:
        out.line(f"{key:<{width}}  {value}".rstrip())
