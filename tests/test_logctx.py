"""logctx: the log format's context fields, and a root-logger setup that cannot fail on them."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from actord.runtime import logctx
from actord.runtime.logctx import LOG_FORMAT


class _Cell:
    member = "parser-1"
    correlation_id = "c-7"


@pytest.fixture
def root(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """The root logger; after the test, its handlers, its level, the record factory and
    logctx's own state are as they were (install() and the factory must agree for the tests
    that follow: an ActorSystem's install() is a no-op once _installed is true)."""
    logger = logging.getLogger()
    handlers, level = list(logger.handlers), logger.level
    factory = logging.getLogRecordFactory()
    monkeypatch.setattr(logctx, "_installed", logctx._installed)  # restored at teardown
    monkeypatch.setattr(logctx, "_handler", None)
    try:
        yield logger
    finally:
        logctx.bind(None)
        for handler in [h for h in logger.handlers if h not in handlers]:
            logger.removeHandler(handler)
        logger.setLevel(level)
        logging.setLogRecordFactory(factory)


def _log_from_a_plain_thread(name: str, level: int, message: str) -> None:
    thread = threading.Thread(target=lambda: logging.getLogger(name).log(level, message))
    thread.start()
    thread.join()


def test_a_plain_formatter_fails_on_a_record_without_context_and_ours_does_not() -> None:
    # Built directly, not by the record factory: as every record is before install().
    record = logging.LogRecord("n", logging.INFO, __file__, 1, "m", None, None)
    with pytest.raises(ValueError, match="actor"):  # the "--- Logging error ---" of old
        logging.Formatter(LOG_FORMAT).format(record)
    assert logctx.formatter().format(record).endswith(" INFO n [actor=- cid=-] m")


def test_a_record_logged_before_install_is_formatted_not_a_logging_error(
    root: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    logctx.configure("info", out)
    # As before install() (or under a factory someone set after it): records lack the fields.
    logging.setLogRecordFactory(logging.LogRecord)
    _log_from_a_plain_thread("test.plain", logging.INFO, "hello")
    assert out.getvalue().endswith(" INFO test.plain [actor=- cid=-] hello\n"), out.getvalue()
    assert "Logging error" not in capsys.readouterr().err


def test_configure_installs_the_context_fields(
    root: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh process: no ActorSystem has installed the record factory yet.
    logging.setLogRecordFactory(logging.LogRecord)
    monkeypatch.setattr(logctx, "_installed", False)
    out = io.StringIO()
    logctx.configure("debug", out)  # as the command line spells it
    logctx.bind(_Cell())  # as an actor's thread does
    logging.getLogger("test.actor").debug("handled")
    logctx.bind(None)
    _log_from_a_plain_thread("test.plain", logging.DEBUG, "outside")
    lines = out.getvalue().splitlines()
    assert [line.split(" ", 3)[3] for line in lines] == [
        "test.actor [actor=parser-1 cid=c-7] handled",
        "test.plain [actor=- cid=-] outside",
    ]
    assert [line.split(" ")[2] for line in lines] == ["DEBUG", "DEBUG"]


def test_configure_again_replaces_only_its_own_handler(root: logging.Logger) -> None:
    others = logging.StreamHandler(io.StringIO())  # someone else's: left alone
    root.addHandler(others)
    first, second = io.StringIO(), io.StringIO()
    logctx.configure(logging.INFO, first)
    logctx.configure(logging.WARNING, second)
    logging.getLogger("test.again").info("below the new level")
    logging.getLogger("test.again").warning("once")
    assert first.getvalue() == ""
    assert second.getvalue().endswith(" WARNING test.again [actor=- cid=-] once\n")
    assert second.getvalue().count("\n") == 1
    assert others in root.handlers
    assert sum(getattr(h, "stream", None) in (first, second) for h in root.handlers) == 1


def test_json_lines_carry_the_actor_and_correlation_id_one_object_per_record(
    root: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    logctx.configure("info", out, json_lines=True)
    logctx.bind(_Cell())  # type: ignore[arg-type]
    try:
        logging.getLogger("a.b").info("two\nlines")
    finally:
        logctx.bind(None)
    monkeypatch.setattr(logctx, "_outside", "-")
    logctx.set_outside("daemon")
    logging.getLogger("a.c").warning("outside")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("a.d").exception("failed")
    first, second, third = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["actor"] == "parser-1" and first["correlation_id"] == "c-7"
    assert first["message"] == "two\nlines" and first["level"] == "INFO"
    assert first["logger"] == "a.b" and first["time"].endswith("Z")
    assert second["actor"] == "daemon" and second["correlation_id"] == "-"
    assert "ValueError: boom" in third["exception"]
