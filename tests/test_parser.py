"""parse_block on awkward input, and the process executor's worker against the thread path."""

from __future__ import annotations

import signal
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from actors.formats import BUILTIN_FORMATS
from actors.parser import _Worker, parse_block

from .conftest import WAIT

SEED = BUILTIN_FORMATS["seed"]

# Every awkward case in one block: lines 1..10.
AWKWARD = (
    b"2026-11-25 12:00:00 [INFO] crlf line\r\n"  # 1: CRLF
    b"\n"  # 2: blank
    b"   \t \r\n"  # 3: whitespace only, CRLF
    b"2026-11-25 12:00:01 [WARNING] caf\xe9 latin-1\n"  # 4: invalid UTF-8
    b"free text, no timestamp\r\n"  # 5: no match, CRLF
    b"2026-11-25 12:00:02 [ERROR] caf\xc3\xa9 \xe2\x9c\x93 utf-8\n"  # 6: valid UTF-8
    b"\r\n"  # 7: blank, CRLF
    b"\xff\xfe\x00 binary\n"  # 8: invalid UTF-8
    b"2026-11-25 12:00:03 [INFO] inner\rcarriage return kept\n"  # 9
    b"2026-11-25 12:00:04 [INFO] last line, no newline"  # 10
)


def _records(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [orjson.loads(row) for row in result["records"].splitlines()]


def _normalised(result: dict[str, Any]) -> dict[str, Any]:
    # msgpack turns the (level, count) tuples into lists: compare them as tuples.
    return {**result, "levels": [tuple(pair) for pair in result["levels"]]}


@pytest.fixture
def worker() -> Iterator[_Worker]:
    started = _Worker()
    try:
        yield started
    finally:
        started.close()


def test_crlf_endings_are_stripped() -> None:
    result = parse_block(b"2026-11-25 12:00:00 [INFO] hello\r\n", 1, SEED)
    assert _records(result) == [
        {"line": 1, "timestamp": "2026-11-25 12:00:00", "level": "INFO", "message": "hello"}
    ]
    assert result["rejects"] == b""


def test_awkward_block_counts() -> None:
    result = parse_block(AWKWARD, 1, SEED)
    assert {k: result[k] for k in ("lines", "matched", "rejected", "blank", "invalid_utf8")} == {
        "lines": 10,
        "matched": 4,
        "rejected": 3,
        "blank": 3,
        "invalid_utf8": 2,
    }
    assert result["levels"] == [("ERROR", 1), ("INFO", 3)]


def test_awkward_block_records() -> None:
    assert _records(parse_block(AWKWARD, 1, SEED)) == [
        {"line": 1, "timestamp": "2026-11-25 12:00:00", "level": "INFO", "message": "crlf line"},
        {
            "line": 6,
            "timestamp": "2026-11-25 12:00:02",
            "level": "ERROR",
            "message": "café ✓ utf-8",
        },
        {
            "line": 9,
            "timestamp": "2026-11-25 12:00:03",
            "level": "INFO",
            "message": "inner\rcarriage return kept",
        },
        {
            "line": 10,
            "timestamp": "2026-11-25 12:00:04",
            "level": "INFO",
            "message": "last line, no newline",
        },
    ]


def test_rejects_keep_the_exact_raw_bytes() -> None:
    assert parse_block(AWKWARD, 1, SEED)["rejects"] == (
        b"4\t2026-11-25 12:00:01 [WARNING] caf\xe9 latin-1\n"
        b"5\tfree text, no timestamp\n"
        b"8\t\xff\xfe\x00 binary\n"
    )


def test_blank_and_whitespace_lines_are_not_rejects() -> None:
    result = parse_block(b"\n \n\t\t\n\r\n \x0b\x0c \n", 7, SEED)
    assert (result["lines"], result["blank"], result["rejected"]) == (5, 5, 0)
    assert result["records"] == b"" and result["rejects"] == b""


def test_line_numbers_start_at_first_line() -> None:
    result = parse_block(b"x\n\n2026-11-25 12:00:00 [INFO] m\n", 1000, SEED)
    assert result["rejects"] == b"1000\tx\n"
    assert [r["line"] for r in _records(result)] == [1002]


def test_last_line_without_newline_is_parsed() -> None:
    result = parse_block(b"2026-11-25 12:00:00 [DEBUG] a\n2026-11-25 12:00:01 [DEBUG] b", 1, SEED)
    assert [r["message"] for r in _records(result)] == ["a", "b"]
    assert (result["lines"], result["levels"]) == (2, [("DEBUG", 2)])


def test_empty_block() -> None:
    result = parse_block(b"", 1, SEED)
    assert result == {
        "lines": 0,
        "matched": 0,
        "rejected": 0,
        "blank": 0,
        "invalid_utf8": 0,
        "records": b"",
        "rejects": b"",
        "levels": [],
    }


def test_level_counts() -> None:
    levels = ["INFO", "ERROR", "INFO", "DEBUG", "INFO", "ERROR", "CRITICAL"]
    data = b"".join(f"2026-11-25 12:00:00 [{lv}] m\n".encode() for lv in levels)
    result = parse_block(data, 1, SEED)
    assert result["levels"] == [("CRITICAL", 1), ("DEBUG", 1), ("ERROR", 2), ("INFO", 3)]


def test_parse_block_memory_is_a_small_multiple_of_the_block() -> None:
    # A 256 KiB block of ~4000 lines; its JSON Lines output is ~1.7x the input. Holding one
    # over-allocated bytes object per record (orjson keeps a 4 KiB buffer for each) costs
    # ~70x the block per parser, which the pool multiplies by its size.
    data = b"".join(
        b"2026-11-25 12:00:%02d [INFO] request %d from 10.0.0.%d took %dms\n"
        % (i % 60, i, i % 256, i % 997)
        for i in range(4000)
    )
    parse_block(data, 1, SEED)  # compile the pattern outside the measurement
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = parse_block(data, 1, SEED)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert result["matched"] == 4000
    assert peak < 10 * len(data), f"peak {peak / len(data):.0f}x the block's size"


def test_process_worker_gives_the_thread_result(worker: _Worker) -> None:
    expected = parse_block(AWKWARD, 321, SEED)
    assert _normalised(worker.parse(AWKWARD, 321, SEED)) == expected
    # The same worker serves a second, different block.
    big = b"".join(b"2026-11-25 12:00:00 [INFO] n=%d\n" % i for i in range(5000)) + AWKWARD
    assert _normalised(worker.parse(big, 1, SEED)) == parse_block(big, 1, SEED)


def test_process_worker_reports_an_error_and_goes_on(worker: _Worker) -> None:
    with pytest.raises(RuntimeError, match="parse worker failed: error"):
        worker.parse(b"a line\n", 1, "(?P<unclosed")
    assert _normalised(worker.parse(AWKWARD, 1, SEED)) == parse_block(AWKWARD, 1, SEED)


def test_process_worker_is_reaped_when_closed() -> None:
    started = _Worker()
    started.close()
    assert started.process.returncode is not None  # reaped: no zombie left
    assert started.process.stdout is not None and started.process.stdout.closed


def test_closing_a_crashed_worker_reaps_it_and_never_raises() -> None:
    worker = _Worker()
    worker.process.kill()
    worker.process.wait(timeout=WAIT)
    with pytest.raises((OSError, RuntimeError)):
        worker.parse(b"x" * 200_000 + b"\n", 1, BUILTIN_FORMATS["seed"])
    worker.close()
    assert worker.process.returncode is not None
    assert worker.process.stdout is not None and worker.process.stdout.closed


@pytest.mark.timeout(3)  # a graceful wait for a worker that is slow to read its input was 5 s
def test_closing_a_worker_that_has_not_read_its_input_yet_ends_it_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A stop waits for its members' workers: one still starting on a busy machine reads its
    # end of input only seconds later (a SIGTERM during start once waited that long).
    real_popen = subprocess.Popen

    def slow_to_start(args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        return real_popen([sys.executable, "-c", "import time; time.sleep(30)"], **kwargs)

    monkeypatch.setattr(subprocess, "Popen", slow_to_start)
    worker = _Worker()
    worker.close()
    assert worker.process.returncode == -signal.SIGKILL
