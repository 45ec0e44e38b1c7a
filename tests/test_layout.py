"""The dependency rule, checked on every import statement of the package.

`actord/runtime/` imports nothing else of the project; `actord/` never imports the jobs
(`actors/`): the daemon loads them by name from its config; `actord/control/` imports no job
code either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """The absolute names of every module `path` imports (relative ones resolved)."""
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    package = package.removesuffix(".__init__")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def _ours(names: set[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in ("actord", "actors")}


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _files("actord/runtime"), ids=lambda p: p.name)
def test_the_runtime_imports_nothing_else_of_the_project(path: Path) -> None:
    outside = {
        n for n in _ours(_imports(path)) if not n.startswith("actord.runtime") and n != "actord"
    }
    assert not outside, f"{path.name} imports {sorted(outside)}"


@pytest.mark.parametrize("path", _files("actord"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_platform_never_imports_the_jobs(path: Path) -> None:
    jobs = {n for n in _imports(path) if n.split(".")[0] == "actors"}
    assert not jobs, f"{path.relative_to(ROOT)} imports {sorted(jobs)}"


def test_the_rule_sees_a_relative_import_that_breaks_it(tmp_path: Path) -> None:
    # The checker itself: a runtime module reaching into the daemon is caught.
    fake = tmp_path / "actord" / "runtime" / "probe.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..daemon import config\nfrom . import message\n")
    names = _ours(_imports(fake, tmp_path))
    assert "actord.daemon.config" in names and "actord.runtime.message" in names
