"""actorctl's figures for people: durations, sizes, rates, counts, local times, colour, tables."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from datetime import datetime, timedelta, timezone

import pytest

from actord.control import scrape
from actord.control.human import (
    Colour,
    Column,
    Output,
    OutputClosed,
    count,
    duration,
    local_time,
    rate,
    size,
    table,
    use_colour,
)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (-0.002, "0ms"),
        (0.0004, "400µs"),
        (0.0000153, "15µs"),
        (0.0009996, "1.0ms"),
        (0.0042, "4.2ms"),
        (0.4031811690000211, "403ms"),
        (0.9996, "1.0s"),
        (1.2, "1.2s"),
        (59.96, "1m00s"),
        (184, "3m04s"),
        (267.447, "4m27s"),
        (7500, "2h05m"),
        (273600, "3d04h"),
    ],
)
def test_durations(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown


@pytest.mark.parametrize(
    ("nbytes", "shown"),
    [
        (None, "-"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (5.45219e07, "52.0 MiB"),
        (17_704_426, "16.9 MiB"),
        (1024**2 - 1, "1.0 MiB"),  # never "1024.0 KiB"
        (3 * 1024**4, "3.0 TiB"),
    ],
)
def test_sizes(nbytes: float | None, shown: str) -> None:
    assert size(nbytes) == shown


def test_rates_and_counts() -> None:
    assert rate(10 * 1024**2, 2.0) == "5.0 MiB/s"
    assert rate(100, 0) == "-"
    assert count(300_000) == "300,000"
    assert count(12.0) == "12"
    assert count(None) == "-"


def test_local_times(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # +05:30, no daylight saving
    _tzset()
    try:
        now = datetime(2026, 12, 1, 10, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
        assert local_time("2026-12-01T03:20:18.123Z", now) == "08:50:18"  # today: the time
        assert local_time("2026-11-29T20:00:00.000Z", now) == "2026-11-30 01:30"  # another day
        assert local_time(None, now) == "-"
        assert local_time("not a time", now) == "not a time"
    finally:
        monkeypatch.undo()
        _tzset()


def _tzset() -> None:
    time.tzset()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_never_with_no_color() -> None:
    assert use_colour(_Tty(), {})
    assert not use_colour(io.StringIO(), {})
    assert not use_colour(_Tty(), {"NO_COLOR": "1"})
    assert not use_colour(_Tty(), {"TERM": "dumb"})
    assert use_colour(_Tty(), {"NO_COLOR": ""})  # set but empty: no-color.org says colour


def test_tables_line_up_with_colour_on() -> None:
    stream = _Tty()
    out = Output(stream, colour=True)
    rows = [{"name": "a", "n": 5, "state": "done"}, {"name": "bbbb", "n": 12345, "state": "x"}]
    columns = [
        Column("NAME", lambda r: r["name"]),
        Column("N", lambda r: count(r["n"]), right=True),
        Column(
            "STATE", lambda r: r["state"], lambda r: Colour.GREEN if r["state"] == "done" else None
        ),
    ]
    table(rows, columns, out)
    lines = stream.getvalue().splitlines()
    assert lines[1] == "a          5  \x1b[32mdone\x1b[0m"
    plain = [line.replace("\x1b[32m", "").replace("\x1b[0m", "") for line in lines]
    assert plain == ["NAME       N  STATE", "a          5  done", "bbbb  12,345  x"]


def test_a_closed_reader_is_output_closed_not_an_os_error() -> None:
    read, write = os.pipe()
    os.close(read)
    stream = os.fdopen(write, "w")
    out = Output(stream)
    out.line("x" * 100)
    with pytest.raises(OutputClosed):
        out.flush()
    with contextlib.suppress(BrokenPipeError):
        stream.close()


def test_metrics_figures_read_as_people_read_them() -> None:
    row = {
        "actor": "parser#0",
        "messages": 12345,
        "errors": 0,
        "restarts": 1,
        "depth": 3,
        "capacity": 8,
        "cpu_s": 1.234,
        "handle_p99": 1.073742,  # a power-of-two bucket's bound, not a measurement
    }
    totals = {"resident memory": 5.45219e07, "worker process cpu": 184.0, "jobs log done": 2.0}
    stream = io.StringIO()
    scrape.show(([row], totals), False, Output(stream))
    table_text, totals_text = stream.getvalue().split("\n\n")
    assert table_text.splitlines()[1].split() == [
        "parser#0",
        "12,345",
        "0",
        "1",
        "3",
        "8",
        "1.2s",
        "<=1.1s",
    ]
    assert totals_text.splitlines() == [
        "jobs log done       2",
        "resident memory     52.0 MiB",
        "worker process cpu  3m04s",
    ]
    stream = io.StringIO()
    scrape.show(([row], totals), True, Output(stream))  # scripts get the figures as they are
    # In seconds, as `actors --json` gives its p99.
    assert json.loads(stream.getvalue())["actors"][0]["handle_p99"] == 1.073742
