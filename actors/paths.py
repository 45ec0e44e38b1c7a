"""Path confinement: every input and output a client names must lie under an allowed root.

Paths are resolved (`os.path.realpath`, which follows symlinks) and compared with
`os.path.commonpath`, never by string prefix: ``/srv/in-other`` is not under ``/srv/in``, a
symlink inside a root that points out of it is refused, and so is ``..``. An output whose file
does not exist yet is judged by its resolved directory. An output may never be its input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from actord.runtime.errors import ErrorCode, Refused

__all__ = ["confine", "confine_pair", "under_roots"]


def _refuse(message: str) -> Refused:
    return Refused(ErrorCode.INVALID_PATH, message)


def confine(path: object, roots: Sequence[str], *, what: str = "path") -> str:
    """The resolved absolute form of `path` if it lies under one of `roots`, else raise."""
    if not isinstance(path, str):
        raise _refuse(f"{what} must be a string")
    if not path or "\x00" in path:
        raise _refuse(f"{what} must be a non-empty string without NUL bytes")
    if not os.path.isabs(path):
        raise _refuse(f"{what} must be an absolute path: {path!r}")
    resolved = os.path.realpath(path)
    if under_roots(resolved, roots):
        return resolved
    allowed = ", ".join(roots) or "none configured"
    raise _refuse(f"{what} {path!r} is not under an allowed root (allowed: {allowed})")


def under_roots(path: str, roots: Sequence[str]) -> bool:
    """True if the absolute `path`, resolved, lies strictly under one of `roots`."""
    resolved = os.path.realpath(path)
    for root in roots:
        real_root = os.path.realpath(root)
        if os.path.commonpath([real_root, resolved]) == real_root and resolved != real_root:
            return True
    return False


def confine_pair(
    source: object, output: object, input_roots: Sequence[str], output_roots: Sequence[str]
) -> tuple[str, str]:
    """Confine a job's input and output; the output may not be (or overwrite) the input."""
    resolved_in = confine(source, input_roots, what="input")
    resolved_out = confine(output, output_roots, what="output")
    if resolved_in == resolved_out:
        raise _refuse("the output would overwrite the input")
    return resolved_in, resolved_out
