"""The FFT engines (`actors/fft.py`): scipy's results against numpy's, for every transform,
input kind and output dtype, and the pools (local and the Ray worker's function) computing
with the engine their config names."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.fft

import actors.fft as fft_module
from actord import ActorSystem
from actors.fft import default_engine, transform
from actors.launcher import JobSystemConfig, start_job_system
from actors.model import Engine, FFTOptions, JobKind, JobSpec, JobState, Transform
from actors.remote_work import DATA, OK, fft_unit

from .conftest import WAIT
from .test_jobs import relative_error

# (transform, input kind): an rfft2 of a complex input is refused (test_validate).
CASES = [(Transform.FFT2, "real"), (Transform.RFFT2, "real"), (Transform.FFT2, "complex")]
# Square, odd, prime (Bluestein's algorithm in both libraries) and one-row chunks.
SHAPES = [(64, 64), (97, 101), (1, 256), (200, 150)]


def _chunk(kind: str, shape: tuple[int, int], seed: int) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal(shape) * 1e3
    return data + 1j * rng.standard_normal(shape) if kind == "complex" else data


def _exact(data: np.ndarray[Any, Any], kind: Transform) -> np.ndarray[Any, Any]:
    """The transform of `data` (single precision) computed in double: the yardstick of a
    single-precision result (its own error, about 1e-16, is far below float32's)."""
    result = np.fft.fft2(np.asarray(data, dtype=np.complex128))
    return result[:, : data.shape[1] // 2 + 1] if kind is Transform.RFFT2 else result


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("kind", "source"), CASES)
def test_scipy_equals_numpy_within_1e_12_in_complex128(
    kind: Transform, source: str, shape: tuple[int, int]
) -> None:
    data = _chunk(source, shape, seed=shape[0])
    ours = transform(data, kind, "complex128", Engine.SCIPY)
    numpy = transform(data, kind, "complex128", Engine.NUMPY)
    assert ours.dtype == numpy.dtype == np.complex128
    assert ours.shape == numpy.shape
    assert relative_error(ours, numpy) < 1e-12


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("kind", "source"), CASES)
def test_scipy_is_within_float32_precision_in_complex64(
    kind: Transform, source: str, shape: tuple[int, int]
) -> None:
    # Both engines compute complex64 in single precision, each its own way: they cannot
    # agree to 1e-12, as float32's epsilon is 1.2e-7. numpy 2's single-precision transform
    # is about 5e-8 from the exact one; scipy's, about 2e-7 (a few epsilons, at 4-6x the
    # speed). Both are held to 4 epsilons of the exact transform and of each other.
    data = _chunk(source, shape, seed=shape[1])
    single = np.asarray(data, dtype=np.complex64 if source == "complex" else np.float32)
    exact = _exact(single, kind)
    ours = transform(data, kind, "complex64", Engine.SCIPY)
    numpy = transform(data, kind, "complex64", Engine.NUMPY)
    assert ours.dtype == numpy.dtype == np.complex64
    bound = 4 * float(np.finfo(np.float32).eps)
    assert relative_error(ours, exact) < bound
    assert relative_error(numpy, exact) < bound
    assert relative_error(ours, numpy) < bound


def test_the_engines_compute_differently() -> None:
    # The guard of the tests above and of the pool test below: if scipy's fft2 of a real
    # chunk were numpy's own code, equality would not show which engine ran.
    data = _chunk("real", (64, 80), seed=1)
    ours = transform(data, Transform.FFT2, "complex128", Engine.SCIPY)
    assert not np.array_equal(ours, np.fft.fft2(data))
    assert np.array_equal(ours, scipy.fft.fft2(data))


def test_scipy_is_the_default_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_engine() is Engine.SCIPY
    real = importlib.util.find_spec

    def without_scipy(name: str, *args: Any) -> Any:
        return None if name == "scipy" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_scipy)
    assert default_engine() is Engine.NUMPY


@pytest.mark.parametrize("engine", list(Engine))
def test_the_pool_computes_with_its_configured_engine(
    engine: Engine, system: ActorSystem, tmp_path: Path
) -> None:
    np.save(tmp_path / "in.npy", np.stack([_chunk("real", (64, 80), i) for i in range(3)]))
    config = JobSystemConfig(parsers=1, fft_workers=2, fft_engine=engine)
    client = start_job_system(system, str(tmp_path / "journal.sqlite3"), config)
    spec = JobSpec(JobKind.FFT, str(tmp_path / "out.npy"), str(tmp_path / "in.npy"), FFTOptions())
    final = client.wait(client.submit(spec).id, WAIT)
    assert final.state is JobState.DONE, final.error
    library = scipy.fft if engine is Engine.SCIPY else np.fft
    expected = np.stack([library.fft2(_chunk("real", (64, 80), i)) for i in range(3)])
    assert np.array_equal(np.load(tmp_path / "out.npy"), expected)


def test_a_ray_worker_without_the_engine_fails_the_unit_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(engine: Engine) -> Any:
        raise ModuleNotFoundError("No module named 'scipy'")

    monkeypatch.setattr(fft_module, "_functions", missing)
    source = ["synthetic", 0, 0, [8, 8]]
    kind, message, _ = fft_unit(source, "fft2", "complex128", ["return", 8 * 8 * 16], "scipy")
    assert kind == DATA
    assert "fft.engine 'scipy' is not installed on Ray node" in message
    assert 'set fft.engine = "numpy"' in message


def test_a_ray_worker_computes_with_the_engine_it_is_told() -> None:
    source = ["synthetic", 2, 1, [32, 48]]
    for engine, library in ((Engine.SCIPY, scipy.fft), (Engine.NUMPY, np.fft)):
        kind, result, cpu = fft_unit(source, "fft2", "complex128", ["return", 32 * 48 * 16], engine)
        assert kind == OK and cpu >= 0
        expected = library.fft2(np.random.default_rng(3).random((32, 48)))
        assert np.frombuffer(result, np.complex128).tobytes() == expected.tobytes()
