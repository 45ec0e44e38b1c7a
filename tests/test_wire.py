"""Jobs on the wire: every field a client sends is checked and named when wrong."""

from __future__ import annotations

from typing import Any

import pytest

from actord import InvalidArgument
from actors.model import FFTOptions, FFTSummary, JobKind, JobSpec, LogOptions, LogSummary, Transform
from actors.wire import spec_from_wire, spec_to_wire, summary_from_wire, summary_to_wire


@pytest.mark.parametrize(
    "spec",
    [
        JobSpec(JobKind.LOG, "/o.jsonl", "/i.log", LogOptions(format="syslog", block_bytes=4096)),
        JobSpec(JobKind.LOG, "/o.jsonl", "/i.log", LogOptions(pattern=r"(?P<x>\d+)")),
        JobSpec(
            JobKind.FFT, "/o.npy", None, FFTOptions(Transform.RFFT2, "complex64", (2, 4, 4), 9)
        ),
        JobSpec(JobKind.FFT, "/o.npy", "/i.npy", FFTOptions()),
        JobSpec(JobKind.FFT, "/o.npy", "/i.npy", FFTOptions(), overwrite=True),
    ],
)
def test_a_spec_survives_the_round_trip(spec: JobSpec) -> None:
    assert spec_from_wire(spec_to_wire(spec)) == spec


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ("log", "a job must be a map"),
        ({"kind": "video", "output": "/o"}, "kind"),
        ({"kind": "log", "output": 5}, "output"),
        ({"kind": "log", "output": "/o", "input": ["/i"]}, "input"),
        ({"kind": "log", "output": "/o", "extra": 1}, "unknown job keys"),
        ({"kind": "log", "output": "/o", "options": [1]}, "options"),
        ({"kind": "log", "output": "/o", "options": {"colour": 1}}, "colour"),
        ({"kind": "log", "output": "/o", "options": {"block_bytes": "big"}}, "block_bytes"),
        ({"kind": "log", "output": "/o", "options": {"block_bytes": True}}, "block_bytes"),
        ({"kind": "fft", "output": "/o", "options": {"transform": "dct"}}, "transform"),
        ({"kind": "fft", "output": "/o", "options": {"synthetic": [1, 2]}}, "synthetic"),
        ({"kind": "fft", "output": "/o", "options": {"synthetic": [1, 2, "3"]}}, "synthetic"),
        ({"kind": "fft", "output": "/o", "options": {"seed": 1.5}}, "seed"),
        ({"kind": "fft", "output": "/o", "overwrite": "yes"}, "overwrite: must be true or false"),
        ({"kind": "fft", "output": "/o", "overwrite": 1}, "overwrite"),
    ],
)
def test_a_bad_field_is_refused_by_name(data: Any, named: str) -> None:
    with pytest.raises(InvalidArgument, match=named):
        spec_from_wire(data)


def test_a_spec_without_overwrite_packs_as_before_the_key_existed() -> None:
    # The journal compares packed specs for an idempotency key: a spec journaled by an older
    # release (no overwrite key) must still match the same spec submitted today.
    spec = JobSpec(JobKind.LOG, "/o.jsonl", "/i.log", LogOptions())
    assert "overwrite" not in spec_to_wire(spec)
    assert spec_to_wire(JobSpec(JobKind.LOG, "/o.jsonl", "/i.log", overwrite=True))["overwrite"]


def test_summaries_survive_the_round_trip() -> None:
    log = LogSummary(10, 8, 2, 0, 0, 0, (("INFO", 8),), 400, 0.5, "/o", "/o.rejects")
    fft = FFTSummary(4, (4, 8, 8), "complex128", "fft2", 4096, 0.1, "/o.npy")
    assert summary_from_wire(summary_to_wire(log)) == log
    assert summary_from_wire(summary_to_wire(fft)) == fft
    assert summary_from_wire(None) is None
