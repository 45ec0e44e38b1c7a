"""How actorctl shows jobs: the jobs table, one job in full, the progress of a watched job and
the line it ends on.

A job's progress is the share of its input bytes read through when the input's size is known,
else the share of its units (blocks or chunks) once their number is known; rate and ETA come
from the time the job has run. The daemon's wire form is the authority; `Hints` add what the
client knows itself (the size of a plain log input it can see, the N of ``--synthetic``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from .human import (
    Colour,
    Column,
    Output,
    count,
    duration,
    local_time,
    pairs,
    parse_time,
    rate,
    size,
    table,
)

__all__ = [
    "ENDED",
    "WAITING",
    "Hints",
    "Watcher",
    "input_of",
    "job_details",
    "job_table",
    "summary_line",
]

Job = Mapping[str, Any]
ENDED: Final = frozenset({"done", "failed", "cancelled"})
WAITING: Final = frozenset({"accepted", "queued"})  # accepted: in the journal, not started
_UNITS: Final = {"log": "blocks", "fft": "chunks"}
_STATE_COLOURS: Final = {
    "done": Colour.GREEN,
    "failed": Colour.RED,
    "cancelled": Colour.YELLOW,
    "running": Colour.CYAN,
    "accepted": Colour.DIM,
}
_GZIP_MAGIC: Final = b"\x1f\x8b"
_BAR: Final = 24  # cells in the progress bar


@dataclass(frozen=True, slots=True)
class Hints:
    """What the client knows of a job that its wire form may not say."""

    input_bytes: int | None = None  # the input's size, as the reader counts its bytes
    total: int | None = None  # the number of units, known before the reader has seen them all

    @classmethod
    def of(cls, job: Job, *, total: int | None = None) -> Hints:
        return cls(_local_input_size(job), total)


def _local_input_size(job: Job) -> int | None:
    """The size of a log job's input, if this client can see it and the reader counts its
    bytes as they are on disk (a gzip input is counted decompressed: no size to compare)."""
    path = job.get("input")
    if job.get("kind") != "log" or not isinstance(path, str) or job.get("state") in ENDED:
        return None
    try:
        with open(path, "rb") as file:
            if file.read(2) == _GZIP_MAGIC:
                return None
            return os.fstat(file.fileno()).st_size or None
    except OSError:
        return None  # not readable here (another user's file, another mount): no figure


def _input_bytes(job: Job, hints: Hints | None) -> int | None:
    wired = job.get("input_bytes")
    if isinstance(wired, int) and wired > 0:
        return wired
    return hints.input_bytes if hints else None


def _total(job: Job, hints: Hints | None) -> int:
    total = job.get("total") or 0
    if not total and hints and hints.total:
        return hints.total
    return int(total)


def fraction(job: Job, hints: Hints | None = None) -> float | None:
    """How far the job has got, from 0 to 1; None when nothing says how much there is."""
    if job.get("state") == "done":
        return 1.0
    total = _total(job, hints)
    if job.get("kind") == "fft" and total:
        return min(1.0, (job.get("done") or 0) / total)  # chunks are equal: exact
    input_bytes = _input_bytes(job, hints)
    if input_bytes:
        return min(1.0, (job.get("bytes") or 0) / input_bytes)
    if total:
        return min(1.0, (job.get("done") or 0) / total)
    return None


def _elapsed(job: Job, now: float) -> float | None:
    """Seconds the job ran: started to ended, or to `now` while it runs."""
    started = parse_time(job.get("started"))
    if started is None:
        return None
    ended = parse_time(job.get("ended"))
    end = ended.timestamp() if ended is not None else now
    return max(0.0, end - started.timestamp())


def _units(job: Job) -> str:
    return _UNITS.get(str(job.get("kind")), "units")


def _percent(job: Job, share: float | None) -> str:
    if share is None:
        return "-"
    if job.get("state") == "done" or _all_written(job):
        return "100%"
    # Floored, and 99% at most: all read is not yet all written, synced and renamed.
    return f"{min(99, int(share * 100))}%"


def _all_written(job: Job) -> bool:
    """Every unit is written (``16 of 16 chunks``): what is left is the output's sync and
    rename, and the percentage says 100 as the count does."""
    total = job.get("total") or 0
    return bool(total) and (job.get("done") or 0) >= total


def _amount(job: Job, hints: Hints | None) -> str:
    """What has been read: ``7.1 MiB of 16.9 MiB``, ``12 of 68 chunks``, ``12 blocks``."""
    total = _total(job, hints)
    done = job.get("done") or 0
    input_bytes = _input_bytes(job, hints)
    if job.get("kind") != "fft" and input_bytes:
        return f"{size(job.get('bytes') or 0)} of {size(input_bytes)}"
    if total:
        return f"{count(done)} of {count(total)} {_units(job)}"
    return f"{count(done)} {_units(job)}"


def _pace(job: Job, hints: Hints | None, now: float) -> tuple[str | None, str | None]:
    """(rate, ETA) of a running job, each None until there is something to say."""
    elapsed = _elapsed(job, now)
    if elapsed is None or elapsed <= 0:
        return None, None
    nbytes = job.get("bytes") or 0
    speed = rate(nbytes, elapsed) if nbytes else None
    share = fraction(job, hints)
    eta = None
    if share is not None and 0 < share < 1:
        eta = duration(elapsed * (1 - share) / share)  # at the pace so far
    return speed, eta


def _state_colour(row: Job) -> Colour | None:
    return _STATE_COLOURS.get(str(row.get("state")))


def _members(job: Job) -> str:
    # The pool members a running job holds now (the daemon sends it for running jobs only).
    members = job.get("members")
    return "-" if members is None else count(members)


def input_of(job: Job) -> str:
    path = job.get("input")
    if path is None and job.get("kind") == "fft":
        return "(synthetic)"
    return "-" if path is None else str(path)


def job_table(jobs: list[Job], out: Output, now: float | None = None) -> None:
    moment = time.time() if now is None else now
    today = datetime.fromtimestamp(moment).astimezone()

    def progress(job: Job) -> str:
        if job.get("state") in WAITING:
            return "-"
        share = fraction(job, Hints.of(job))
        return _percent(job, share) if share is not None else _amount(job, None)

    def took(job: Job) -> str:
        return duration(_elapsed(job, moment))

    columns = (
        Column("ID", lambda j: str(j.get("id"))),
        Column("KIND", lambda j: str(j.get("kind"))),
        Column("STATE", lambda j: str(j.get("state")), _state_colour),
        Column("PROGRESS", progress, right=True),
        Column("MEMBERS", _members, right=True),
        Column("STARTED", lambda j: local_time(j.get("started"), today)),
        Column("DURATION", took, right=True),
        Column("INPUT", input_of),
    )
    table(jobs, columns, out)


def job_details(job: Job, out: Output, now: float | None = None) -> None:
    """One job in full, every figure in units people read."""
    moment = time.time() if now is None else now
    state = str(job.get("state"))
    hints = Hints.of(job)
    share = fraction(job, hints)
    progress = _amount(job, hints)
    if share is not None:
        progress = f"{_percent(job, share)}, {progress}"
    elif state in WAITING:
        progress = "-"
    rows = [
        ("id", str(job.get("id"))),
        ("kind", str(job.get("kind"))),
        ("state", out.paint(state, _state_colour(job))),
        ("input", input_of(job)),
        ("output", str(job.get("output"))),
    ]
    summary = job.get("summary")
    if isinstance(summary, Mapping) and summary.get("rejects"):
        rows.append(("rejects", str(summary["rejects"])))
    rows.append(("progress", progress))
    if job.get("bytes"):
        rows.append(("read", size(job["bytes"])))
    elapsed = _elapsed(job, moment)
    rows += [
        ("created", local_time(job.get("created"))),
        ("started", local_time(job.get("started"))),
        ("ended", local_time(job.get("ended"))),
        ("duration", duration(elapsed)),
    ]
    if elapsed and job.get("bytes"):
        rows.append(("throughput", rate(job["bytes"], elapsed)))
    if state == "running":
        _, eta = _pace(job, hints, moment)
        if eta:
            rows.append(("eta", eta))
        if job.get("members") is not None:
            rows.append(("pool members", _members(job)))
    if isinstance(summary, Mapping):
        rows += _summary_rows(summary)
    if job.get("crash_retries"):
        rows.append(("crash retries", count(job["crash_retries"])))
    if job.get("error"):
        rows.append(("error", out.paint(str(job["error"]), Colour.RED)))
    pairs(rows, out)


def _summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    if summary.get("type") == "log":
        lines = (
            f"{count(summary.get('lines'))}: {count(summary.get('matched'))} matched, "
            f"{count(summary.get('rejected'))} rejected, {count(summary.get('blank'))} blank, "
            f"{count(summary.get('invalid_utf8'))} invalid UTF-8, "
            f"{count(summary.get('too_long'))} too long"
        )
        levels = sorted(summary.get("levels") or (), key=lambda pair: -int(pair[1]))
        shown = ", ".join(f"{name} {count(n)}" for name, n in levels) or "-"
        return [("lines", lines), ("levels", shown)]
    if summary.get("type") == "fft":
        return [("chunks", _fft_what(summary))]
    return []


def _fft_what(summary: Mapping[str, Any]) -> str:
    shape = list(summary.get("shape") or ())
    side = "x".join(str(n) for n in shape[1:]) or "?"
    chunks = count(summary.get("chunks"))
    return f"{chunks} of {side} ({summary.get('transform')}, {summary.get('dtype')})"


def summary_line(job: Job, now: float | None = None) -> str:
    """The one line a watched job ends on: how it ended, how long it took, what it made."""
    moment = time.time() if now is None else now
    job_id, state = job.get("id"), job.get("state")
    took = _elapsed(job, moment)
    summary = job.get("summary")
    if state == "done":
        nbytes = job.get("bytes") or 0
        what = ""
        if isinstance(summary, Mapping) and summary.get("type") == "log":
            what = (
                f"{count(summary.get('lines'))} lines, {count(summary.get('matched'))} "
                f"matched, {count(summary.get('rejected'))} rejected; "
            )
        elif isinstance(summary, Mapping) and summary.get("type") == "fft":
            what = f"{_fft_what(summary)}; "
        speed = f" at {rate(nbytes, took)}" if took else ""
        return (
            f"{job_id} done in {duration(took)}: {what}{size(nbytes)}{speed} -> {job.get('output')}"
        )
    if took is None:
        return f"{job_id} {state} before it started"
    where = _amount(job, None)
    return f"{job_id} {state} after {duration(took)} ({where} done)"


class Watcher:
    """Shows a job as it advances: redrawn in place on a terminal, one line per event when
    stdout is a pipe or a file, one JSON object per line (each with its ``event``) for
    scripts."""

    def __init__(
        self,
        out: Output,
        *,
        as_json: bool,
        hints: Hints | None = None,
        clock: Callable[[], float] = time.time,
        quiet: bool = False,
    ) -> None:
        self.out = out
        self.as_json = as_json
        self.hints = hints
        self.clock = clock
        self.quiet = quiet  # only the end (and JSON's end event)
        self._drawn = False  # a bar is on the terminal's current line
        # Piped: the last (state, tenth of the way) printed; a line only when it changes.
        self._step: tuple[str, int] | None = None

    def event(self, name: str, job: Job) -> None:
        """A JSON line (``submitted``, ``progress``, ``end``); nothing for people."""
        if self.as_json and not (self.quiet and name == "progress"):
            self.out.line(json.dumps({"event": name, "job": job}, default=list))
            self.out.flush()

    def progress(self, job: Job) -> None:
        if self.quiet:
            return
        if self.as_json:
            self.event("progress", job)
            return
        if self.hints is None:
            self.hints = Hints.of(job)
        if not self.out.tty:
            # A pipe or a file gets a line as the state changes and at each tenth of the
            # way, not one per block (a big job would print hundreds).
            share = fraction(job, self.hints)
            step = (str(job.get("state")), -1 if share is None else int(share * 10))
            if step == self._step:
                return
            self._step = step
        if self.out.tty:
            width = shutil.get_terminal_size((80, 24)).columns
            # Back to the line's start and clear it: a shorter line leaves nothing behind.
            self.out.write("\r\x1b[K" + self._line(job, bar=True, width=width - 1))
            self._drawn = True
        else:
            self.out.line(self._line(job, bar=False, width=None))
        self.out.flush()

    def end(self, job: Job) -> None:
        if self.as_json:
            self.event("end", job)
            return
        if self._drawn:
            self.out.write("\r\x1b[K")
            self._drawn = False
        colour = _STATE_COLOURS.get(str(job.get("state")))
        self.out.line(self.out.paint(summary_line(job, self.clock()), colour))
        self.out.flush()

    def interrupted(self) -> None:
        """Leave the terminal on a fresh line (a Ctrl-C under a bar)."""
        if self._drawn:
            self.out.line()
            self.out.flush()
            self._drawn = False

    def _line(self, job: Job, *, bar: bool, width: int | None) -> str:
        state = str(job.get("state"))
        share = fraction(job, self.hints)
        parts: list[tuple[str, str]] = [(str(job.get("id")), str(job.get("id")))]
        parts.append((state, self.out.paint(state, _STATE_COLOURS.get(state))))
        if bar:
            filled = round(_BAR * share) if share is not None else 0
            drawn = "[" + "#" * filled + "." * (_BAR - filled) + "]"
            parts.append((drawn, drawn))
        if state not in WAITING:
            percent = _percent(job, share)
            parts.append((percent, percent))
            amount = _amount(job, self.hints)
            parts.append((amount, amount))
            speed, eta = _pace(job, self.hints, self.clock())
            if speed:
                parts.append((speed, speed))
            if eta:
                parts.append((f"ETA {eta}", f"ETA {eta}"))
        # On a terminal the line must fit (a wrapped line cannot be redrawn in place): the
        # least telling figures go first.
        while width is not None and len(parts) > 1 and _width(parts) > width:
            parts.pop()
        return "  ".join(shown for _, shown in parts)


def _width(parts: list[tuple[str, str]]) -> int:
    return sum(len(plain) for plain, _ in parts) + 2 * (len(parts) - 1)
