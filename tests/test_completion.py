"""Shell completion, generated from actorctl's parser, in real bash and real zsh: commands,
options, choices, files, and the names a running daemon knows."""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from actord import ActorSystem
from actord.control import completion
from actord.control.ctl import main
from actord.control.methods import Dispatcher, runtime_methods
from actord.control.server import ControlServer

from ._prometheus import require
from ._pty import Terminal
from .conftest import Recorder, RecordingActor

ROOT = Path(__file__).resolve().parent.parent


class _Hooks:
    def status(self) -> dict[str, object]:
        return {"version": "test"}

    def reload(self, timeout: float) -> dict[str, object]:
        return {}

    def shutdown(self) -> None:
        pass


@pytest.fixture
def socket_path(tmp_path: Path, system: ActorSystem, recorder: Recorder) -> Iterator[str]:
    system.spawn_pool(lambda: RecordingActor(recorder), "workers", 2)
    system.spawn(lambda: RecordingActor(recorder), "monitor")
    server = ControlServer(
        str(tmp_path / "run" / "s.sock"), Dispatcher(runtime_methods(system, _Hooks()))
    )
    server.start()
    try:
        yield server.path
    finally:
        server.stop()


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A directory for PATH with an `actorctl` that runs this checkout's."""
    directory = tmp_path / "bin"
    directory.mkdir()
    script = directory / "actorctl"
    script.write_text(
        f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -c "
        "'import sys; from actord.control.ctl import main; sys.exit(main())' \"$@\"\n"
    )
    script.chmod(0o755)
    return directory


def _script(shell: str) -> str:
    out = io.StringIO()
    assert main(["completion", shell], stdout=out) == 0
    return out.getvalue()


# -- bash ------------------------------------------------------------------------------------


def _bash_complete(
    tmp_path: Path, bin_dir: Path, lines: list[str], cwd: Path | None = None
) -> list[list[str]]:
    """What bash's completion function offers for each command line (the last word is the one
    being completed; an empty one is written as a trailing space)."""
    script = tmp_path / "actorctl.bash"
    script.write_text(_script("bash"))
    calls = "".join(
        f"COMP_WORDS=({' '.join(_bash_words(line))}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); "
        'COMPREPLY=(); _actorctl; printf "%s\\n" "${COMPREPLY[@]}" | sort; echo "-- end"\n'
        for line in lines
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", f"source {script}\n{calls}"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        cwd=cwd,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    answers = done.stdout.split("-- end\n")[:-1]
    return [[word for word in answer.splitlines() if word] for answer in answers]


def _bash_words(line: str) -> list[str]:
    words = line.split(" ")
    return [f"'{word}'" for word in words]


def test_bash_completes_commands_options_choices_and_files(tmp_path: Path, bin_dir: Path) -> None:
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "app.log").write_text("x\n")
    answers = _bash_complete(
        tmp_path,
        bin_dir,
        [
            "actorctl sub",
            "actorctl s",
            "actorctl submit fft o.npy --tr",
            "actorctl submit fft o.npy --transform ",
            "actorctl --socket /x submit log --for",
            "actorctl submit log out.jsonl --input inputs/",
            "actorctl completion ",
            "actorctl --timeout 5 jobs --",
        ],
        cwd=tmp_path,
    )
    assert answers[0] == ["submit"]
    assert answers[1] == ["scale", "send", "shutdown", "status", "submit"]  # not `_names`
    assert answers[2] == ["--transform"]
    assert answers[3] == ["fft2", "rfft2"]
    assert answers[4] == ["--format"]
    assert answers[5] == ["inputs/app.log"]
    assert answers[6] == ["bash", "zsh"]
    assert answers[7] == ["--help", "--json", "--limit", "--socket", "--state", "--timeout"]


def test_bash_completes_the_names_the_daemon_knows(
    tmp_path: Path, bin_dir: Path, socket_path: str
) -> None:
    answers = _bash_complete(
        tmp_path,
        bin_dir,
        [
            f"actorctl --socket {socket_path} restart ",
            f"actorctl --socket {socket_path} scale ",
            "actorctl --socket /nowhere/s.sock restart ",  # not running: nothing offered
        ],
    )
    assert answers[0] == ["monitor", "workers", "workers#0", "workers#1"]
    assert answers[1] == ["workers"]
    assert answers[2] == []


# -- zsh -------------------------------------------------------------------------------------


class _Zsh:
    """An interactive zsh on a pty with the generated completion installed; `complete` types
    a line and a Tab and returns the line as completion left it."""

    def __init__(self, tmp_path: Path, bin_dir: Path) -> None:
        functions = tmp_path / "zfunc"
        functions.mkdir()
        (functions / "_actorctl").write_text(_script("zsh"))
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "ZDOTDIR": str(tmp_path),
        }
        self.terminal = Terminal([require("zsh"), "-f", "-i"], env, columns=200)
        self.count = 0
        # The widget bound to ^X^B prints the edit buffer between markers, then clears it.
        self._run(
            f"fpath=({functions} $fpath); autoload -Uz compinit; compinit -u -D; "
            "zstyle ':completion:*' list-prompt ''; "
            "show() { zle -I; print -r -- \"<<$BUFFER>>\"; BUFFER=''; }; "
            "zle -N show; bindkey '^X^B' show; PS1='zsh> '; print ready-$((6*7))"
        )
        self.terminal.read_until(lambda out: b"ready-42" in out, 60)

    def _run(self, line: str) -> None:
        self.terminal.write(line.encode() + b"\n")

    def complete(self, line: str) -> str:
        start = len(self.terminal.output)
        self.terminal.write(line.encode() + b"\t\x18\x02")
        pattern = re.compile(rb"<<([^\r\n]*)>>")
        output = self.terminal.read_until(lambda out: pattern.search(out, start) is not None, 60)
        found = pattern.search(output, start)
        assert found is not None
        return found.group(1).decode()

    def close(self) -> None:
        self.terminal.close()


@pytest.fixture
def zsh(tmp_path: Path, bin_dir: Path) -> Iterator[_Zsh]:
    shell = _Zsh(tmp_path, bin_dir)
    try:
        yield shell
    finally:
        shell.close()


def test_zsh_completes_commands_options_choices_and_names(
    zsh: _Zsh, socket_path: str, tmp_path: Path
) -> None:
    assert zsh.complete("actorctl sub") == "actorctl submit "
    assert (
        zsh.complete("actorctl submit fft o.npy --tr") == "actorctl submit fft o.npy --transform="
    )
    assert zsh.complete("actorctl submit fft o.npy --transform rf") == (
        "actorctl submit fft o.npy --transform rfft2 "
    )
    assert zsh.complete("actorctl completion z") == "actorctl completion zsh "
    assert zsh.complete(f"actorctl --socket {socket_path} restart mon") == (
        f"actorctl --socket {socket_path} restart monitor "
    )
    assert zsh.complete(f"actorctl scale --socket {socket_path} wo") == (
        f"actorctl scale --socket {socket_path} workers "
    )
    assert zsh.complete("actorctl _na") == "actorctl _na"  # internal: never offered


def test_the_scripts_follow_the_parser() -> None:
    # Any parser: a subcommand, option or choice added to it is in both scripts, no more.
    parser = argparse.ArgumentParser(prog="tool")
    sub = parser.add_subparsers(dest="command")
    frob = sub.add_parser("frobnicate", help="frob it")
    frob.add_argument("--level", choices=("low", "high"), help="how hard")
    completion.mark(frob.add_argument("target"), "file")
    sub.add_parser("hidden")  # no help: internal
    bash, zsh = completion.bash(parser), completion.zsh(parser)
    assert '"frobnicate --level") echo "=low high"' in bash
    assert '"frobnicate 0") echo "@file"' in bash
    assert "complete -F _tool tool" in bash and "hidden" not in bash
    assert "'frobnicate:frob it'" in zsh and "hidden" not in zsh
    assert "'--level=[how hard]:level:(low high)'" in zsh
    assert "':target:_files'" in zsh
