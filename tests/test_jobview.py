"""How actorctl shows jobs: the share done, rate and ETA, the watch's lines, the jobs table."""

from __future__ import annotations

import gzip
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from actord.control import jobview
from actord.control.human import Output
from actord.control.jobview import Hints, Watcher, fraction, summary_line

STARTED = "2027-01-15T08:00:00.000Z"  # a job's start, as the daemon sends it
T0 = datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()  # the same instant, in epoch seconds


def _job(**fields: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "id": "log-3",
        "kind": "log",
        "state": "running",
        "input": None,
        "output": "/srv/out/app.jsonl",
        "done": 0,
        "total": 0,
        "bytes": 0,
        "error": None,
        "crash_retries": 0,
        "summary": None,
        "created": STARTED,
        "started": STARTED,
        "ended": None,
    }
    job.update(fields)
    return job


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_share_is_of_input_bytes_when_the_size_is_known() -> None:
    # 10 of 68 blocks written but half the bytes read: bytes tell the truth, not blocks.
    job = _job(done=10, total=68, bytes=500, input_bytes=1000)
    assert fraction(job) == 0.5
    assert fraction(_job(bytes=250), Hints(input_bytes=1000)) == 0.25  # the client's own size


def test_without_a_size_the_share_is_of_units_known_or_hinted() -> None:
    assert fraction(_job(done=3, total=12)) == 0.25
    assert fraction(_job(done=3)) is None  # nothing says how many there are
    fft = _job(kind="fft", done=4, bytes=123)
    assert fraction(fft, Hints(total=16)) == 0.25  # `--synthetic 16,H,W`: N is known
    assert fraction(_job(state="done", done=5)) == 1.0


def test_a_log_input_the_client_can_see_gives_its_size(tmp_path: Path) -> None:
    plain = tmp_path / "app.log"
    plain.write_bytes(b"x\n" * 500)
    assert Hints.of(_job(input=str(plain))).input_bytes == 1000
    # gzip is counted decompressed by the reader: its size on disk would lie.
    packed = tmp_path / "app.log.gz"
    packed.write_bytes(gzip.compress(b"x\n" * 500))
    assert Hints.of(_job(input=str(packed))).input_bytes is None
    assert Hints.of(_job(input=str(tmp_path / "gone.log"))).input_bytes is None


def _watch(stream: io.StringIO, *, as_json: bool = False, now: float = T0 + 2) -> Watcher:
    return Watcher(Output(stream, colour=False), as_json=as_json, hints=Hints(), clock=lambda: now)


def test_off_a_terminal_one_plain_line_per_event_with_rate_and_eta() -> None:
    stream = io.StringIO()
    watch = _watch(stream)
    watch.progress(_job(state="accepted", started=None))
    watch.progress(_job(bytes=2 << 20, input_bytes=8 << 20))  # 2 MiB in 2 s, a quarter
    watch.end(_job(state="done", done=4, total=4, bytes=8 << 20, ended="2027-01-15T08:00:04Z"))
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert text.splitlines() == [
        "log-3  accepted",
        "log-3  running  25%  2.0 MiB of 8.0 MiB  1.0 MiB/s  ETA 6.0s",
        "log-3 done in 4.0s: 8.0 MiB at 2.0 MiB/s -> /srv/out/app.jsonl",
    ]


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_ends_on_the_summary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    stream = _Tty()
    watch = _watch(stream)
    watch.progress(_job(bytes=1, input_bytes=4))
    watch.progress(_job(bytes=3, input_bytes=4))
    watch.end(_job(state="done", bytes=4, ended="2027-01-15T08:00:04Z"))
    frames = stream.getvalue().split("\r\x1b[K")
    assert frames[0] == ""
    assert frames[1].startswith("log-3  running  [######..................]  25%")
    assert frames[2].startswith("log-3  running  [##################......]  75%")
    assert "\n" not in frames[1] + frames[2]
    assert frames[3] == "log-3 done in 4.0s: 4 B at 1 B/s -> /srv/out/app.jsonl\n"


def test_a_bar_never_wraps_a_narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "50")
    stream = _Tty()
    _watch(stream).progress(_job(bytes=3 << 20, input_bytes=4 << 20))
    (line,) = stream.getvalue().split("\r\x1b[K")[1:]
    assert len(line) <= 49 and line.startswith("log-3  running  [")


def test_every_json_line_has_its_event() -> None:
    stream = io.StringIO()
    watch = _watch(stream, as_json=True)
    watch.event("submitted", _job(state="accepted"))
    watch.progress(_job(bytes=5))
    watch.end(_job(state="failed", error="boom"))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["submitted", "progress", "end"]
    assert lines[-1]["job"]["error"] == "boom"


def test_a_running_job_shows_99_percent_at_most() -> None:
    stream = io.StringIO()
    _watch(stream).progress(_job(bytes=10, input_bytes=10))
    assert " 99% " in stream.getvalue()


def test_summary_lines() -> None:
    ended = "2027-01-15T08:03:04Z"
    summary = {"type": "log", "lines": 300_000, "matched": 294_080, "rejected": 5_920}
    done = _job(state="done", bytes=17_704_426, ended=ended, summary=summary)
    assert summary_line(done) == (
        "log-3 done in 3m04s: 300,000 lines, 294,080 matched, 5,920 rejected; 16.9 MiB at "
        "94.0 KiB/s -> /srv/out/app.jsonl"
    )
    failed = _job(state="failed", done=12, total=68, ended=ended)
    assert summary_line(failed) == "log-3 failed after 3m04s (12 of 68 blocks done)"
    queued = _job(state="cancelled", started=None, ended=ended)
    assert summary_line(queued) == "log-3 cancelled before it started"


def test_the_jobs_table_has_the_columns_people_read() -> None:
    stream = io.StringIO()
    jobs = [
        _job(state="done", bytes=10, ended="2027-01-15T08:00:01.500Z", input="/in/a.log"),
        _job(id="fft-4", kind="fft", state="running", done=4, total=16, members=2),
        _job(id="log-5", state="accepted", started=None),
    ]
    jobview.job_table(jobs, Output(stream, colour=False), now=T0 + 65)
    header, *rows = stream.getvalue().splitlines()
    assert header.split() == [
        "ID",
        "KIND",
        "STATE",
        "PROGRESS",
        "MEMBERS",
        "STARTED",
        "DURATION",
        "INPUT",
    ]
    cells = [row.split() for row in rows]
    assert [c[:4] for c in cells] == [
        ["log-3", "log", "done", "100%"],
        ["fft-4", "fft", "running", "25%"],
        ["log-5", "log", "accepted", "-"],
    ]
    assert [c[4] for c in cells] == ["-", "2", "-"]  # pool members held by running jobs
    assert [c[6] for c in cells] == ["1.5s", "1m05s", "-"]
    assert [c[7] for c in cells] == ["/in/a.log", "(synthetic)", "-"]


def test_a_running_jobs_details_say_how_many_pool_members_it_holds() -> None:
    stream = io.StringIO()
    jobview.job_details(_job(done=4, total=16, members=2), Output(stream, colour=False), T0 + 5)
    assert re.search(r"^pool members\s+2$", stream.getvalue(), re.MULTILINE), stream.getvalue()
    stream = io.StringIO()
    ended = _job(state="done", ended="2027-01-15T08:00:01.500Z", members=2)
    jobview.job_details(ended, Output(stream, colour=False), T0 + 5)
    assert "pool members" not in stream.getvalue()  # a figure of now: running jobs only


def test_every_unit_written_reads_100_percent_as_its_count_does() -> None:
    stream = io.StringIO()
    watcher = Watcher(Output(stream), as_json=False)
    running = {"id": "fft-1", "kind": "fft", "state": "running", "done": 16, "total": 16}
    watcher.progress(running)
    assert "  100%  16 of 16 chunks" in stream.getvalue()
    watcher.progress({**running, "done": 15})
    assert "  93%  15 of 16 chunks" in stream.getvalue()
