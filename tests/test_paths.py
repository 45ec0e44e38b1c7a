"""Path confinement: a table of escapes, all refused; valid nested paths accepted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actord.runtime.errors import ErrorCode, Refused
from actors.paths import confine, confine_pair


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    (inputs / "nested" / "deep").mkdir(parents=True)
    outputs.mkdir()
    (tmp_path / "in-sibling").mkdir()
    (tmp_path / "secret").write_text("no")
    (inputs / "ok.log").write_text("x")
    (inputs / "nested" / "deep" / "ok.log").write_text("x")
    (inputs / "escape").symlink_to(tmp_path / "secret")
    (inputs / "dir-escape").symlink_to(tmp_path / "in-sibling")
    (inputs / "inner-link").symlink_to(inputs / "nested")
    return inputs, outputs


def test_valid_nested_paths_are_accepted(roots: tuple[Path, Path]) -> None:
    inputs, _ = roots
    allowed = [str(inputs)]
    assert confine(str(inputs / "ok.log"), allowed) == str(inputs / "ok.log")
    deep = inputs / "nested" / "deep" / "ok.log"
    assert confine(str(deep), allowed) == str(deep)
    via_link = inputs / "inner-link" / "deep" / "ok.log"  # a link that stays inside
    assert confine(str(via_link), allowed) == str(deep)
    assert confine(str(inputs / "nested" / ".." / "ok.log"), allowed) == str(inputs / "ok.log")


@pytest.mark.parametrize(
    "make",
    [
        lambda i, t: str(i / ".." / "secret"),  # .. out of the root
        lambda i, t: str(i / "nested" / ".." / ".." / "secret"),
        lambda i, t: str(t / "in-sibling" / "x.log"),  # shares the prefix "in"
        lambda i, t: str(i / "escape"),  # a symlink out of the root
        lambda i, t: str(i / "dir-escape" / "x.log"),  # through a directory symlink
        lambda i, t: str(i),  # the root itself is not a file in it
        lambda i, t: "relative/ok.log",
        lambda i, t: str(i / "ok.log") + "\x00.txt",
        lambda i, t: "",
        lambda i, t: 42,
        lambda i, t: None,
        lambda i, t: [str(i / "ok.log")],
        lambda i, t: "/etc/passwd",
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "sibling-prefix",
        "symlink-out",
        "dir-symlink-out",
        "root",
        "relative",
        "nul",
        "empty",
        "int",
        "none",
        "list",
        "absolute-elsewhere",
    ],
)
def test_escapes_are_refused(roots: tuple[Path, Path], tmp_path: Path, make: object) -> None:
    inputs, _ = roots
    candidate = make(inputs, tmp_path)  # type: ignore[operator]
    with pytest.raises(Refused) as info:
        confine(candidate, [str(inputs)])
    assert info.value.code is ErrorCode.INVALID_PATH


def test_an_output_may_not_overwrite_its_input(roots: tuple[Path, Path]) -> None:
    inputs, outputs = roots
    both = [str(inputs), str(outputs)]
    source, target = confine_pair(str(inputs / "ok.log"), str(outputs / "new.jsonl"), both, both)
    assert (source, target) == (str(inputs / "ok.log"), str(outputs / "new.jsonl"))
    with pytest.raises(Refused, match="overwrite"):
        confine_pair(str(inputs / "ok.log"), str(inputs / "ok.log"), both, both)
    link = outputs / "alias.log"
    os.symlink(inputs / "ok.log", link)  # an output that resolves to the input
    with pytest.raises(Refused, match="overwrite"):
        confine_pair(str(inputs / "ok.log"), str(link), both, both)
