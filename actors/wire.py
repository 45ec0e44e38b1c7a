"""Jobs on the wire: msgpack-friendly maps to and from the typed job model.

The control socket and the journal speak plain maps; actors speak frozen dataclasses. This is
the one place that converts between them, and it checks every field a client sends: a wrong
key or type is an `InvalidArgument` naming the field, never a crash deeper in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from datetime import UTC, datetime
from typing import Any, Final

import msgpack

from actord import InvalidArgument

from .model import (
    FFTOptions,
    FFTSummary,
    JobInfo,
    JobKind,
    JobSpec,
    LogOptions,
    LogSummary,
    Transform,
)

__all__ = [
    "info_to_wire",
    "pack",
    "spec_from_wire",
    "spec_to_wire",
    "summary_from_wire",
    "summary_to_wire",
    "unpack",
]

_SPEC_KEYS = ("kind", "input", "output", "options", "overwrite")


def pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=True)


def _field(where: str, value: object, expected: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) and expected is not bool:
        raise InvalidArgument(f"{where}: must be {_name(expected)}, got {value!r}")
    if not isinstance(value, expected):
        raise InvalidArgument(f"{where}: must be {_name(expected)}, got {value!r}")
    return value


def _name(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    names = {"str": "a string", "int": "an integer", "bool": "true or false"}
    return " or ".join(names.get(t.__name__, t.__name__) for t in types)


def spec_from_wire(data: object) -> JobSpec:
    """A `JobSpec` from ``{kind, input, output, options}``; raises InvalidArgument."""
    if not isinstance(data, Mapping):
        raise InvalidArgument("a job must be a map with kind, input, output and options")
    unknown = set(data) - set(_SPEC_KEYS)
    if unknown:
        raise InvalidArgument(f"unknown job keys: {sorted(map(str, unknown))}")
    try:
        kind = JobKind(str(data.get("kind")))
    except ValueError:
        kinds = [k.value for k in JobKind]
        raise InvalidArgument(f"kind: must be one of {kinds}, got {data.get('kind')!r}") from None
    output = _field("output", data.get("output"), str)
    source = data.get("input")
    if source is not None:
        _field("input", source, str)
    options = data.get("options") or {}
    if not isinstance(options, Mapping):
        raise InvalidArgument("options: must be a map")
    parsed = _log_options(options) if kind is JobKind.LOG else _fft_options(options)
    overwrite = _field("overwrite", data.get("overwrite", False), bool)
    return JobSpec(kind, output, source, parsed, overwrite=overwrite)


def _allowed(options: Mapping[Any, Any], cls: type) -> None:
    names = {f.name for f in fields(cls)}
    unknown = set(options) - names
    if unknown:
        raise InvalidArgument(
            f"options: unknown keys {sorted(map(str, unknown))} (known: {sorted(names)})"
        )


def _log_options(options: Mapping[Any, Any]) -> LogOptions:
    _allowed(options, LogOptions)
    values: dict[str, Any] = {}
    for key in ("format", "pattern"):
        if options.get(key) is not None:
            values[key] = _field(f"options.{key}", options[key], str)
    for key in ("block_bytes", "max_line_bytes", "max_decompressed_bytes", "max_ratio"):
        if key in options:
            values[key] = _field(f"options.{key}", options[key], int)
    return LogOptions(**values)


def _fft_options(options: Mapping[Any, Any]) -> FFTOptions:
    _allowed(options, FFTOptions)
    values: dict[str, Any] = {}
    if "transform" in options:
        try:
            values["transform"] = Transform(options["transform"])
        except ValueError:
            known = [t.value for t in Transform]
            raise InvalidArgument(f"options.transform: must be one of {known}") from None
    if "dtype" in options:
        values["dtype"] = _field("options.dtype", options["dtype"], str)
    if "seed" in options:
        values["seed"] = _field("options.seed", options["seed"], int)
    synthetic = options.get("synthetic")
    if synthetic is not None:
        if not isinstance(synthetic, list | tuple) or len(synthetic) != 3:
            raise InvalidArgument("options.synthetic: must be [N, H, W]")
        values["synthetic"] = tuple(_field("options.synthetic", n, int) for n in synthetic)
    return FFTOptions(**values)


# Options added after specs were first journaled, with their defaults.
_NEWER_DEFAULTS: Final = {
    name: getattr(LogOptions(), name) for name in ("max_decompressed_bytes", "max_ratio")
}


def spec_to_wire(spec: JobSpec) -> dict[str, Any]:
    options = {k: v for k, v in asdict(spec.options).items() if v is not None}
    for key, default in _NEWER_DEFAULTS.items():
        # Only when set: a spec journaled before the key existed packs the same (a retried
        # submit with its idempotency key finds its job).
        if options.get(key) == default:
            del options[key]
    data: dict[str, Any] = {
        "kind": spec.kind.value,
        "input": spec.input,
        "output": spec.output,
        "options": options,
    }
    if spec.overwrite:  # only when set: a spec journaled before the key existed packs the same
        data["overwrite"] = True
    return data


def summary_to_wire(summary: LogSummary | FFTSummary | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    data = asdict(summary)
    data["type"] = "log" if isinstance(summary, LogSummary) else "fft"
    return data


def summary_from_wire(data: object) -> LogSummary | FFTSummary | None:
    if not isinstance(data, Mapping):
        return None
    values = {k: v for k, v in data.items() if k != "type"}
    if data.get("type") == "log":
        values["levels"] = tuple(tuple(pair) for pair in values.get("levels", ()))
        return LogSummary(**values)
    values["shape"] = tuple(values.get("shape", ()))
    return FFTSummary(**values)


def info_to_wire(info: JobInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "kind": info.kind.value,
        "state": info.state.value,
        "input": info.input,
        "output": info.output,
        "done": info.done,
        "total": info.total,
        "bytes": info.bytes,
        "input_bytes": info.input_bytes,
        "error": info.error,
        "crash_retries": info.crash_retries,
        "summary": summary_to_wire(info.summary),
        "created": rfc3339(info.created),
        "started": rfc3339(info.started),
        "ended": rfc3339(info.ended),
    }


def rfc3339(seconds: float | None) -> str | None:
    """Epoch seconds as RFC 3339 in UTC with milliseconds (``2026-12-01T03:20:18.123Z``)."""
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
