"""Scale-out benchmark: the FFT job on the thread executor against the Ray executor.

    python bench/scale.py [--chunks 24] [--size 1000] [--runs 7] [--dir /dev/shm]

Starts a 2-node Ray cluster on this machine (1 CPU each, as the tests do; stopped at the end,
exactly its own processes), then runs the same FFT job (fft2 of an (N, H, W) float64 stack
read from a .npy, complex128 output) on three job systems, interleaved, `--runs` times each:

- thread: the local FFT pool, 2 threads;
- ray shared path: 2 Ray workers that read their chunk by offset and write their result into
  the writer's file (input and output under a shared root);
- ray object store: the chunk goes to the Ray worker and its result comes back through Ray.

Each system runs two jobs of the same size first (a daemon's workers are warm: their imports
done, their memory mapped). Then the per-unit overhead: a job of tiny chunks (4x4: no
compute to speak of) on the thread and the Ray (shared path) executors; the overhead is the
extra member time per unit, 2 x (T_ray - T_thread) / units. One table, medians, ratios
against the thread executor.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actord import ActorSystem
from actors.client import JobClient
from actors.launcher import JobSystemConfig, start_job_system
from actors.model import Executor, FFTOptions, JobKind, JobSpec, JobState
from tests._ray import RayCluster

TINY = (400, 4, 4)


def run_job(client: JobClient, source: str | None, output: Path, options: FFTOptions) -> float:
    started = time.monotonic()
    info = client.submit(JobSpec(JobKind.FFT, str(output), source, options, overwrite=True))
    info = client.wait(info.id, timeout=600)
    elapsed = time.monotonic() - started
    if info.state is not JobState.DONE:
        raise SystemExit(f"{output.name}: {info.state.value}: {info.error}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=24)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="actord-scale-", dir=args.dir))
    source = scratch / "stack.npy"
    rng = np.random.default_rng(1)
    stack = np.lib.format.open_memmap(
        source, mode="w+", dtype=np.float64, shape=(args.chunks, args.size, args.size)
    )
    for i in range(args.chunks):
        stack[i] = rng.random((args.size, args.size))
    stack.flush()
    del stack
    out_bytes = args.chunks * args.size * args.size * 16
    print(f"cluster: 2 local nodes, 1 CPU each; job: {args.chunks} x {args.size}x{args.size}")
    cluster = RayCluster().start()
    systems: dict[str, ActorSystem] = {}
    try:
        clients: dict[str, JobClient] = {}
        for name, executor, shared in (
            ("thread", Executor.THREAD, ()),
            ("ray shared path", Executor.RAY, (str(scratch),)),
            ("ray object store", Executor.RAY, ()),
        ):
            systems[name] = ActorSystem(name.replace(" ", "-"))
            config = JobSystemConfig(
                fft_workers=2,
                fft_executor=executor,
                ray_address=cluster.address,
                ray_cpus=0.5,  # both Ray systems' workers fit on the two nodes
                shared_roots=shared,
            )
            journal = str(scratch / f"{name.replace(' ', '-')}.sqlite3")
            clients[name] = start_job_system(systems[name], journal, config)
            # Warm: a daemon's workers have run jobs before (imports, memory already mapped).
            for _ in range(2):
                run_job(clients[name], str(source), scratch / "warm.npy", FFTOptions())
        times: dict[str, list[float]] = {name: [] for name in clients}
        # Two phases, each interleaved with the thread executor: the object-store runs fill
        # Ray's object store and the nodes' memory, which would slow the shared-path runs
        # that follow them.
        for phase in ("ray shared path", "ray object store"):
            for _ in range(args.runs):
                for name in ("thread", phase):
                    output = scratch / f"out-{name.replace(' ', '-')}.npy"
                    times[name].append(run_job(clients[name], str(source), output, FFTOptions()))
        expected = (scratch / "out-thread.npy").read_bytes()
        for name in ("ray-shared-path", "ray-object-store"):
            assert (scratch / f"out-{name}.npy").read_bytes() == expected, f"{name} differs"
        tiny: dict[str, list[float]] = {"thread": [], "ray shared path": []}
        for _ in range(args.runs):
            for name, samples in tiny.items():
                output = scratch / f"tiny-{name.replace(' ', '-')}.npy"
                samples.append(run_job(clients[name], None, output, FFTOptions(synthetic=TINY)))
    finally:
        for system in systems.values():
            system.stop(timeout=30)
        cluster.remove()
        shutil.rmtree(scratch, ignore_errors=True)
    base = statistics.median(times["thread"])
    print(f"\n{'executor':<20} {'median s':>9} {'chunks/s':>9} {'out MB/s':>9} {'vs thread':>10}")
    for name, samples in times.items():
        median = statistics.median(samples)
        rate = args.chunks / median
        print(
            f"{name:<20} {median:>9.3f} {rate:>9.1f} {out_bytes / median / 1e6:>9.0f} "
            f"{base / median:>9.2f}x"
        )
    units = TINY[0]
    t_thread, t_ray = statistics.median(tiny["thread"]), statistics.median(tiny["ray shared path"])
    overhead = 2 * (t_ray - t_thread) / units * 1000
    print(
        f"\nper-unit overhead (ray, {units} units of {TINY[1]}x{TINY[2]}, 2 members): "
        f"{overhead:.2f} ms (thread {t_thread * 1000 / units:.2f} ms/unit wall, "
        f"ray {t_ray * 1000 / units:.2f} ms/unit wall)"
    )
    shared = statistics.median(times["ray shared path"])
    print(
        f"\ngoals: shared path >= 0.80x thread: {base / shared:.2f}x; overhead <= 5 ms: "
        f"{overhead:.2f} ms"
    )
    per_node = args.chunks / shared / 2
    print(
        f"per-node rate (shared path): {per_node:.1f} chunks/s; "
        f"writer bandwidth (thread job's output): {out_bytes / base / 1e6:.0f} MB/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
