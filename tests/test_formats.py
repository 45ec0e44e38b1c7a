"""Golden tests for the built-in log formats and for user patterns (actors.formats).

Each format gets a few realistic lines run through `parse_block`; the decoded JSON records are
compared to the exact expected dicts, and lines that do not match go to the rejects.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from actord import InvalidArgument
from actors.formats import BUILTIN_FORMATS, resolve_format
from actors.parser import parse_block

FIRST_LINE = 40  # not 1, so that line numbering is checked too


def _run(fmt: str, lines: list[bytes]) -> tuple[list[dict[str, Any]], bytes, dict[str, Any]]:
    """Parse `lines` (numbered from FIRST_LINE) with the built-in format `fmt`."""
    pattern = resolve_format(fmt).pattern
    result = parse_block(b"".join(line + b"\n" for line in lines), FIRST_LINE, pattern)
    records = [orjson.loads(row) for row in result["records"].splitlines()]
    return records, result["rejects"], result


def test_every_builtin_format_is_tested() -> None:
    assert set(BUILTIN_FORMATS) == {"seed", "python", "syslog", "apache-error", "common"}


def test_seed_format() -> None:
    records, rejects, result = _run(
        "seed",
        [
            b"2026-11-25 12:00:00 [INFO] server started on port 8080",
            b"2026-11-25 12:00:01 [ERROR] disk /dev/sda1 is 97% full",
            b"2026-11-25 12:00:02 INFO no brackets around the level",
            b"2026-11-25 12:00:03 [DEBUG] ",
        ],
    )
    assert records == [
        {
            "line": 40,
            "timestamp": "2026-11-25 12:00:00",
            "level": "INFO",
            "message": "server started on port 8080",
        },
        {
            "line": 41,
            "timestamp": "2026-11-25 12:00:01",
            "level": "ERROR",
            "message": "disk /dev/sda1 is 97% full",
        },
        {"line": 43, "timestamp": "2026-11-25 12:00:03", "level": "DEBUG", "message": ""},
    ]
    assert rejects == b"42\t2026-11-25 12:00:02 INFO no brackets around the level\n"
    assert result["levels"] == [("DEBUG", 1), ("ERROR", 1), ("INFO", 1)]


def test_python_logging_format() -> None:
    records, rejects, result = _run(
        "python",
        [
            b"2026-11-25 12:00:00,123 - app.db - WARNING - slow query: 1.204s",
            b"2026-11-25 12:00:00,457 - __main__ - INFO - worker 3 ready - queue=default",
            b"2026-11-25 12:00:01 - app - INFO - no milliseconds",
            b"2026-11-25 12:00:02,000 - app - info - lower-case level",
        ],
    )
    assert records == [
        {
            "line": 40,
            "timestamp": "2026-11-25 12:00:00,123",
            "logger": "app.db",
            "level": "WARNING",
            "message": "slow query: 1.204s",
        },
        {
            "line": 41,
            "timestamp": "2026-11-25 12:00:00,457",
            "logger": "__main__",
            "level": "INFO",
            "message": "worker 3 ready - queue=default",
        },
    ]
    assert rejects == (
        b"42\t2026-11-25 12:00:01 - app - INFO - no milliseconds\n"
        b"43\t2026-11-25 12:00:02,000 - app - info - lower-case level\n"
    )
    assert result["levels"] == [("INFO", 1), ("WARNING", 1)]


def test_syslog_format_with_and_without_pri_and_pid() -> None:
    records, rejects, result = _run(
        "syslog",
        [
            b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
            b"Nov  5 03:04:05 web01 sshd[1234]: Accepted publickey for alice from 10.0.0.7",
            b"<165>Nov 25 12:00:00 db-2 postgres[77]: checkpoint complete",  # local4.notice
            b"Nov 25 12:00:01 web01 CRON: (root) CMD (run-parts /etc/cron.hourly)",
            b"Nov 5 03:04:05 web01 sshd: single-digit day without padding",
        ],
    )
    assert records == [
        {
            "line": 40,
            "pri": "34",
            "timestamp": "Oct 11 22:14:15",
            "host": "mymachine",
            "tag": "su",
            "pid": None,
            "message": "'su root' failed for lonvick on /dev/pts/8",
        },
        {
            "line": 41,
            "pri": None,
            "timestamp": "Nov  5 03:04:05",
            "host": "web01",
            "tag": "sshd",
            "pid": "1234",
            "message": "Accepted publickey for alice from 10.0.0.7",
        },
        {
            "line": 42,
            "pri": "165",  # three digits: facility 20 * 8 + severity 5
            "timestamp": "Nov 25 12:00:00",
            "host": "db-2",
            "tag": "postgres",
            "pid": "77",
            "message": "checkpoint complete",
        },
        {
            "line": 43,
            "pri": None,
            "timestamp": "Nov 25 12:00:01",
            "host": "web01",
            "tag": "CRON",
            "pid": None,
            "message": "(root) CMD (run-parts /etc/cron.hourly)",
        },
    ]
    assert rejects == b"44\tNov 5 03:04:05 web01 sshd: single-digit day without padding\n"
    assert result["levels"] == []  # syslog has no level group


def test_apache_error_format_with_and_without_module_pid_and_client() -> None:
    records, rejects, result = _run(
        "apache-error",
        [
            b"[Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 35708:tid 4328636416] "
            b"[client 72.15.99.187:50000] File does not exist: /usr/local/apache2/htdocs/x.ico",
            b"[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok /etc/httpd/workers2.conf",
            b"[Tue Nov 25 12:00:00.000001 2026] [mpm_event:notice] [pid 1234] AH00489: "
            b"Apache/2.4.58 configured -- resuming normal operations",
            b"[Tue Nov 25 12:00:01 2026] [error] [client 10.0.0.9] Directory index forbidden",
            b"Tue Nov 25 12:00:02 2026 error no brackets at all",
        ],
    )
    assert records == [
        {
            "line": 40,
            "timestamp": "Wed Oct 11 14:32:52.123456 2000",
            "module": "core",
            "level": "error",
            "pid": "35708",
            "tid": "4328636416",
            "client": "72.15.99.187:50000",
            "message": "File does not exist: /usr/local/apache2/htdocs/x.ico",
        },
        {
            "line": 41,
            "timestamp": "Sun Dec 04 04:47:44 2005",
            "module": None,
            "level": "notice",
            "pid": None,
            "tid": None,
            "client": None,
            "message": "workerEnv.init() ok /etc/httpd/workers2.conf",
        },
        {
            "line": 42,
            "timestamp": "Tue Nov 25 12:00:00.000001 2026",
            "module": "mpm_event",
            "level": "notice",
            "pid": "1234",
            "tid": None,
            "client": None,
            "message": "AH00489: Apache/2.4.58 configured -- resuming normal operations",
        },
        {
            "line": 43,
            "timestamp": "Tue Nov 25 12:00:01 2026",
            "module": None,
            "level": "error",
            "pid": None,
            "tid": None,
            "client": "10.0.0.9",
            "message": "Directory index forbidden",
        },
    ]
    assert rejects == b"44\tTue Nov 25 12:00:02 2026 error no brackets at all\n"
    assert result["levels"] == [("error", 2), ("notice", 2)]


def test_common_log_format_with_size_and_dash() -> None:
    records, rejects, _ = _run(
        "common",
        [
            b'127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" '
            b"200 2326",
            b'10.0.0.2 - - [25/Nov/2026:12:00:00 +0000] "HEAD / HTTP/1.1" 304 -',
            b'10.0.0.3 - - [25/Nov/2026:12:00:01 +0000] "GET / HTTP/1.1" 200 512 '
            b'"http://example.com/" "Mozilla/5.0"',
            b'10.0.0.4 - - [25/Nov/2026:12:00:02 +0000] "GET / HTTP/1.1" 2000 10',
        ],
    )
    assert records == [
        {
            "line": 40,
            "host": "127.0.0.1",
            "ident": "-",
            "user": "frank",
            "timestamp": "10/Oct/2000:13:55:36 -0700",
            "request": "GET /apache_pb.gif HTTP/1.0",
            "status": "200",
            "size": "2326",
        },
        {
            "line": 41,
            "host": "10.0.0.2",
            "ident": "-",
            "user": "-",
            "timestamp": "25/Nov/2026:12:00:00 +0000",
            "request": "HEAD / HTTP/1.1",
            "status": "304",
            "size": "-",
        },
    ]
    assert rejects == (
        b'42\t10.0.0.3 - - [25/Nov/2026:12:00:01 +0000] "GET / HTTP/1.1" 200 512 '
        b'"http://example.com/" "Mozilla/5.0"\n'
        b'43\t10.0.0.4 - - [25/Nov/2026:12:00:02 +0000] "GET / HTTP/1.1" 2000 10\n'
    )


def test_user_pattern_is_used_as_given() -> None:
    fmt = resolve_format(pattern=r"(?P<key>\w+)=(?P<value>\S*)")
    assert fmt.name == "custom"
    result = parse_block(b"user=alice\nnot a pair\nempty=\n", 1, fmt.pattern)
    assert [orjson.loads(row) for row in result["records"].splitlines()] == [
        {"line": 1, "key": "user", "value": "alice"},
        {"line": 3, "key": "empty", "value": ""},
    ]
    assert result["rejects"] == b"2\tnot a pair\n"
    assert resolve_format("custom", r"(?P<x>.)").pattern == r"(?P<x>.)"


def test_no_name_means_the_seed_format() -> None:
    assert resolve_format() == resolve_format("seed")
    assert resolve_format("seed").pattern == BUILTIN_FORMATS["seed"]


@pytest.mark.parametrize(
    ("name", "pattern", "message"),
    [
        ("nginx", None, "unknown log format 'nginx'"),
        (None, r"(?P<a>[unclosed", "invalid pattern"),
        (None, r"\d+ (\w+)", "at least one named group"),
        (None, r"(?P<line>\d+) (?P<rest>.*)", "reserved"),
        ("syslog", r"(?P<a>.*)", "either a format name or a pattern"),
    ],
    ids=["unknown-name", "bad-regex", "no-named-group", "reserved-line", "name-and-pattern"],
)
def test_resolve_format_refuses(name: str | None, pattern: str | None, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        resolve_format(name, pattern)
