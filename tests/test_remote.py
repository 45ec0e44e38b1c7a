"""The Ray executors on a real 2-node Ray cluster (`ray_cluster`), with in-process job systems.

Outputs are compared byte for byte with the local executors' (threads for FFT, worker
processes for logs), in both data paths: shared (the Ray worker reads its chunk by offset and
writes its result into the writer's file) and through Ray's object store.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from actord import ActordError, ActorSystem
from actord.runtime.errors import ErrorCode
from actors.client import JobClient
from actors.launcher import JobSystemConfig, start_job_system
from actors.model import (
    Executor,
    FFTOptions,
    JobKind,
    JobSpec,
    JobState,
    LogOptions,
    Transform,
)
from actors.ray_link import RayState
from actors.ray_metrics import RayCollector
from actors.remote_work import HOLD_ENV

from ._ray import RayCluster, hold_fifos, synthetic_fft, until, wait_held
from .conftest import WAIT
from .test_jobs import generate_log

pytestmark = pytest.mark.timeout(240)

LOG_OPTIONS = LogOptions(block_bytes=16384)
FFT_CASES = [
    (transform, dtype, "real.npy")
    for transform, dtype in product(Transform, ("complex128", "complex64"))
] + [(Transform.FFT2, "complex128", "complex.npy"), (Transform.FFT2, "complex64", "complex.npy")]


def make_inputs(base: Path) -> None:
    rng = np.random.default_rng(7)
    np.save(base / "real.npy", rng.random((6, 200, 300)))
    np.save(base / "complex.npy", rng.random((3, 64, 96)) + 1j * rng.random((3, 64, 96)))
    (base / "app.log").write_bytes(generate_log(12000).data)


def run_all(client: JobClient, base: Path, out: Path) -> dict[str, bytes]:
    """Every FFT case and the log job, at once; their outputs (and the rejects) by name."""
    specs: dict[str, JobSpec] = {}
    for transform, dtype, source in FFT_CASES:
        name = f"{source[:-4]}-{transform.value}-{dtype}.npy"
        options = FFTOptions(transform=transform, dtype=dtype)
        specs[name] = JobSpec(JobKind.FFT, str(out / name), str(base / source), options)
    specs["app.jsonl"] = JobSpec(
        JobKind.LOG, str(out / "app.jsonl"), str(base / "app.log"), LOG_OPTIONS
    )
    jobs = {name: client.submit(spec).id for name, spec in specs.items()}
    for name, job in jobs.items():
        info = client.wait(job, timeout=180)
        assert info.state is JobState.DONE, f"{name}: {info.error}"
    outputs = {name: (out / name).read_bytes() for name in specs}
    outputs["app.jsonl.rejects"] = (out / "app.jsonl.rejects").read_bytes()
    return outputs


def ray_config(cluster: RayCluster, shared: tuple[str, ...]) -> JobSystemConfig:
    # Half a CPU each: once a node is lost, both members' Ray actors fit on the other.
    return JobSystemConfig(
        parsers=2,
        parser_executor=Executor.RAY,
        fft_workers=2,
        fft_executor=Executor.RAY,
        ray_address=cluster.address,
        ray_cpus=0.5,
        shared_roots=shared,
        max_jobs=8,
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("ray-inputs")
    make_inputs(base)
    return base


@pytest.fixture(scope="module")
def local_outputs(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("local-out")
    config = JobSystemConfig(
        parser_executor=Executor.PROCESS, fft_executor=Executor.THREAD, max_jobs=8
    )
    with ActorSystem("local") as system:
        client = start_job_system(system, str(out / "journal.sqlite3"), config)
        return run_all(client, inputs, out)


@pytest.fixture
def ray_system(ray_cluster: RayCluster, tmp_path: Path) -> Iterator[ActorSystem]:
    system = ActorSystem("ray")
    try:
        yield system
    finally:
        system.stop(timeout=WAIT)


@pytest.mark.parametrize("mode", ["shared", "object-store"])
def test_ray_executors_write_what_the_local_ones_write(
    mode: str,
    ray_cluster: RayCluster,
    ray_system: ActorSystem,
    inputs: Path,
    local_outputs: dict[str, bytes],
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    shared = (str(inputs), str(out)) if mode == "shared" else ()
    client = start_job_system(
        ray_system, str(tmp_path / "journal.sqlite3"), ray_config(ray_cluster, shared)
    )
    outputs = run_all(client, inputs, out)
    assert outputs.keys() == local_outputs.keys()
    for name, data in local_outputs.items():
        assert outputs[name] == data, f"{name} differs from the local executor's ({mode})"
    link = client.link
    assert link is not None
    counters = link.counters
    fft = [counters[m] for m in ("fft#0", "fft#1") if m in counters]
    parse = [counters[m] for m in ("parser#0", "parser#1") if m in counters]
    assert sum(c.units for c in fft) == sum(
        n for _, _, src in FFT_CASES for n in [6 if src == "real.npy" else 3]
    )
    assert sum(c.units for c in parse) > 1
    assert all(c.cpu_seconds > 0 for c in fft + parse if c.units)
    moved = sum(c.moved_bytes for c in fft)
    if mode == "shared":
        assert moved == 0, "on the shared path no chunk data goes through Ray"
    else:
        assert moved > sum(len(v) for k, v in local_outputs.items() if k.endswith(".npy")) / 2
    assert link.status()[0] is RayState.UP
    assert link.status()[2] == sum(1 for c in counters.values() if c.units), "members up"
    # The figures Prometheus scrapes: per member (bounded labels), and the cluster's.
    assert link.probe(timeout=10)[:2] == (RayState.UP, 2)
    registry = CollectorRegistry()
    registry.register(RayCollector(link))
    scraped = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    for member in ("fft#0", "fft#1"):
        labels = (("actor", member), ("pool", "fft"))
        assert scraped[("actord_remote_cpu_seconds_total", labels)] > 0
        assert scraped[("actord_remote_units_total", labels)] == counters[member].units
        assert scraped[("actord_remote_units_in_flight", labels)] == 0
    assert scraped[("actord_ray_up", ())] == 1
    assert scraped[("actord_ray_nodes", ())] == 2
    members = {dict(labels).get("actor") for _, labels in scraped}
    assert members <= {None, "fft#0", "fft#1", "parser#0", "parser#1"}, "no job id as a label"


def test_a_worker_node_killed_mid_job_the_job_completes_with_identical_output(
    ray_cluster: RayCluster,
    ray_system: ActorSystem,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fifo = hold_fifos(tmp_path)
    monkeypatch.setenv(HOLD_ENV, f"worker:{fifo}")  # a unit held on the worker node
    out = tmp_path / "out.npy"
    client = start_job_system(
        ray_system, str(tmp_path / "journal.sqlite3"), ray_config(ray_cluster, (str(tmp_path),))
    )
    options = FFTOptions(synthetic=(24, 128, 160), seed=3)
    job = client.submit(JobSpec(JobKind.FFT, str(out), None, options)).id
    wait_held(fifo, 120)
    try:
        ray_cluster.worker.kill()  # kill -9 every process of the node, the held worker's too
        info = client.wait(job, timeout=180)
    finally:
        ray_cluster.worker.start()
    assert info.state is JobState.DONE, info.error
    assert np.array_equal(np.load(out), synthetic_fft(3, 24, (128, 160)))
    counters = client.link.counters if client.link else {}
    assert sum(c.retries for c in counters.values()) >= 1, "the lost units were sent again"
    assert sum(c.failures for c in counters.values()) >= 1


def test_a_cluster_that_is_down_refuses_with_unavailable_and_is_used_again_once_back(
    ray_cluster: RayCluster,
    ray_system: ActorSystem,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAY_gcs_rpc_server_reconnect_timeout_s", "3")  # the bridge gives up sooner
    client = start_job_system(
        ray_system, str(tmp_path / "journal.sqlite3"), ray_config(ray_cluster, ())
    )
    link = client.link
    assert link is not None
    spec = JobSpec(JobKind.FFT, str(tmp_path / "a.npy"), None, FFTOptions(synthetic=(4, 32, 32)))
    assert client.wait(client.submit(spec).id, 60).state is JobState.DONE
    try:
        ray_cluster.stop()
        until(lambda: link.state is RayState.DOWN, 90, "the link sees the cluster gone")
        with pytest.raises(ActordError) as refused:
            client.submit(
                JobSpec(
                    JobKind.FFT, str(tmp_path / "b.npy"), None, FFTOptions(synthetic=(4, 32, 32))
                )
            )
        assert refused.value.code is ErrorCode.UNAVAILABLE
        assert ray_cluster.address in str(refused.value) and "ray status" in str(refused.value)
        # The daemon's side is up: the store answers, the local pools are untouched.
        assert ray_system.ping("store").actor == "store"
        assert link.status() == (RayState.DOWN, 0, 0)
    finally:
        ray_cluster.start()
    until(lambda: link.state is RayState.UP, 90, "the link reconnects once the cluster is back")
    info = client.wait(
        client.submit(
            JobSpec(
                JobKind.FFT,
                str(tmp_path / "c.npy"),
                None,
                FFTOptions(synthetic=(4, 32, 32), seed=9),
            )
        ).id,
        120,
    )
    assert info.state is JobState.DONE, info.error
    assert np.array_equal(np.load(tmp_path / "c.npy"), synthetic_fft(9, 4, (32, 32)))
