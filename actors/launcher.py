"""The job system: the shared pools, the job store, and the launcher of each job's actors.

`start_job_system` spawns the parser pool, the FFT pool and the store (which owns the journal
and the one job table) and returns a `JobClient`. The daemon's job service, the demo, the
benches and the tests all run jobs this way, through the same store.

For each job it starts, the store calls its `Launcher`: a writer and then a reader, both
per job, in front of the shared pools. Several jobs run at once on the same pools.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from actord import Actor, ActorRef, ActorSystem, RestartPolicy
from actord.runtime.errors import InvalidArgument

from .beneath import root_of
from .client import JobClient
from .formats import resolve_format
from .model import Engine, Executor, JobEnded, JobKind, JobSpec, LogOptions
from .parser import Parser
from .ray_link import RayLink
from .reader import ArrayReader, LogReader, reader_capacity
from .store import JobStore, Retention
from .validate import Roots
from .writer import ArrayWriter, LogWriter

_log: Final = logging.getLogger("actors.launcher")

__all__ = [
    "FFT_WORKERS",
    "PARSERS",
    "RAY_HOST",
    "STATEFUL",
    "STORE",
    "JobSystemConfig",
    "Launcher",
    "start_job_system",
]

STORE: Final = "store"
PARSERS: Final = "parser"
FFT_WORKERS: Final = "fft"
RAY_HOST: Final = "ray"
_GATE_WAIT: Final = 20.0  # seconds a submit may wait for a first connection to the cluster
STATEFUL: Final = RestartPolicy(max_restarts=0)  # for actors whose state a restart would lose
_ROLES: Final = ("reader", "writer")  # each job's own actors, counted under kind.role


@dataclass(frozen=True, slots=True)
class JobSystemConfig:
    parsers: int = 2
    parser_executor: Executor = Executor.PROCESS
    fft_workers: int = 2
    pool_capacity: int = 8  # units queued per job in each pool: bounds the memory in flight
    writer_capacity: int = 16  # units a writer may have queued (each up to a block's records)
    window: int = 32  # units a job may have sent and not yet written
    block_timeout: float = 60.0  # a parse worker busy longer on one block is killed
    max_jobs: int = 4  # jobs running at once; the rest wait, journaled, in order
    roots: Roots | None = None  # (input roots, output roots), re-checked as a job starts
    max_crash_retries: int = 5  # daemon deaths under one job before it fails instead
    fft_executor: Executor = Executor.THREAD  # or RAY
    fft_engine: Engine | None = None  # None: scipy when installed, else numpy
    ray_address: str = ""  # "" no Ray; "local", "auto", "host:port", "ray://host:port"
    ray_namespace: str = "actord"
    ray_cpus: float = 1.0  # CPUs each Ray worker asks for (one per pool member)
    shared_roots: tuple[str, ...] = ()  # mounted at the same path on every Ray node
    retention: Retention = field(default_factory=Retention)  # ended jobs leave the journal


class Launcher:
    """Spawns a job's writer, then its reader (the reader's first unit needs somewhere to
    go). Called on the store's thread; it spawns and never waits."""

    def __init__(self, system: ActorSystem, config: JobSystemConfig) -> None:
        self.system = system
        self.config = config

    def __call__(
        self, job_id: str, spec: JobSpec, ended: JobEnded, roots: Roots | None = None
    ) -> tuple[ActorRef, ActorRef]:
        """(reader, writer), which open the job's files beneath `roots` (the store's now:
        a reload may change them). Raises ActordError (a name taken, a pattern that no
        longer compiles in a journal written by an older release): the store fails it."""
        writer, reader = f"{job_id}.writer", f"{job_id}.reader"
        config = self.config
        inputs, outputs = (None, None) if roots is None else roots
        overwrite = spec.overwrite
        make_writer: Callable[[], Actor]
        make_reader: Callable[[], Actor]
        if isinstance(spec.options, LogOptions):
            assert spec.input is not None
            source, options = spec.input, spec.options
            pattern = resolve_format(options.format, options.pattern).pattern
            make_writer = lambda: LogWriter(  # noqa: E731
                job_id, spec.output, STORE, reader, roots=outputs, overwrite=overwrite
            )
            make_reader = lambda: LogReader(  # noqa: E731
                job_id,
                source,
                options,
                pattern,
                pool=PARSERS,
                writer=writer,
                store=STORE,
                window=config.window,
                ended=ended,
                roots=inputs,
            )
        else:
            fft_options = spec.options
            shared = (False, False)
            if config.fft_executor is Executor.RAY:
                # By the paths' text (they are kept resolved): nothing is looked at here, on
                # the store's thread.
                shared = (
                    spec.input is not None and root_of(spec.input, config.shared_roots) is not None,
                    root_of(spec.output, config.shared_roots) is not None,
                )
            make_writer = lambda: ArrayWriter(  # noqa: E731
                job_id, spec.output, STORE, reader, roots=outputs, overwrite=overwrite
            )
            make_reader = lambda: ArrayReader(  # noqa: E731
                job_id,
                spec.input,
                fft_options,
                pool=FFT_WORKERS,
                writer=writer,
                store=STORE,
                window=config.window,
                ended=ended,
                shared=shared,
                roots=inputs,
            )
        # Roles keep metrics labels bounded: these actors live only as long as their job.
        kind = spec.kind.value
        writer_ref = self.system.spawn(
            make_writer, writer, capacity=config.writer_capacity, role=f"{kind}.writer"
        )
        try:
            reader_ref = self.system.spawn(
                make_reader, reader, capacity=reader_capacity(config.window), role=f"{kind}.reader"
            )
        except BaseException:
            writer_ref.stop(graceful=False, wait=False)  # it removes what it created
            raise
        return reader_ref, writer_ref


def start_job_system(
    system: ActorSystem, journal: str, config: JobSystemConfig | None = None
) -> JobClient:
    """Spawn the pools and the job store (its journal at `journal`) on `system`; return a
    client for submitting jobs. Unfinished jobs in the journal are run again."""
    from .fft import FFTWorker, default_engine  # noqa: PLC0415 - numpy only where needed

    config = config or JobSystemConfig()
    engine = config.fft_engine or default_engine()
    system.declare_roles(*(f"{kind.value}.{part}" for kind in JobKind for part in _ROLES))
    link = _ray_link(system, config)
    executor, block_timeout = config.parser_executor, config.block_timeout
    parser: Callable[[], Actor] = lambda: Parser(executor, block_timeout)  # noqa: E731
    fft: Callable[[], Actor] = lambda: FFTWorker(engine)  # noqa: E731
    if link is not None:
        from .remote import RemoteFFTWorker, RemoteParser  # noqa: PLC0415

        if executor is Executor.RAY:
            parser = lambda: RemoteParser(link, unit_timeout=block_timeout)  # noqa: E731
        if config.fft_executor is Executor.RAY:
            fft = lambda: RemoteFFTWorker(link, engine, unit_timeout=block_timeout)  # noqa: E731
    # Fair pools: the running jobs' units are served in turn (by their job, `fair_key`), so
    # one slow or hostile job never holds every member while another job's units wait.
    pool_capacity = config.pool_capacity
    system.spawn_pool(parser, PARSERS, config.parsers, capacity=pool_capacity, fair=True)
    system.spawn_pool(fft, FFT_WORKERS, config.fft_workers, capacity=pool_capacity, fair=True)
    # Which library computes is chosen once, here ("" in the config: scipy when installed):
    # said at start, since the outputs of the two differ in the last bits.
    _log.info(
        "pools: %d parsers (%s), %d FFT workers (%s, %s engine)",
        config.parsers,
        executor.value,
        config.fft_workers,
        config.fft_executor.value,
        engine.value,
    )
    launcher = Launcher(system, config)
    store = system.spawn(
        lambda: JobStore(
            journal,
            launcher,
            config.max_jobs,
            roots=config.roots,
            max_crash_retries=config.max_crash_retries,
            retention=config.retention,
        ),
        STORE,
        capacity=65536,  # readers' and writers' notes never wait: room for every one
        # The job table and the journal cannot be rebuilt by a fresh instance: a crash
        # escalates (the daemon exits non-zero; systemd restarts it, and the journal re-runs
        # what was unfinished).
        policy=STATEFUL,
    )
    return JobClient(store, roots=config.roots, gate=_gate(link, config), link=link)


def _ray_link(system: ActorSystem, config: JobSystemConfig) -> RayLink | None:
    # The link and its host, spawned before the pools so that they stop after them.
    if Executor.RAY not in (config.parser_executor, config.fft_executor):
        return None
    if not config.ray_address:
        raise InvalidArgument('executor "ray" needs ray.address (see actord run --help)')
    from .remote import RayHost  # noqa: PLC0415 - only with a Ray pool

    link = RayLink(config.ray_address, config.ray_namespace, config.ray_cpus)
    system.spawn(lambda: RayHost(link), RAY_HOST)  # restartable: the link outlives it
    return link


def _gate(link: RayLink | None, config: JobSystemConfig) -> Callable[[JobKind], None]:
    """What a submit checks beyond its spec: that the pool its job needs can take it."""
    needs = set()
    if config.parser_executor is Executor.RAY:
        needs.add(JobKind.LOG)
    if config.fft_executor is Executor.RAY:
        needs.add(JobKind.FFT)

    def gate(kind: JobKind) -> None:
        if link is not None and kind in needs:
            link.check(_GATE_WAIT)  # raises RayUnavailable: refused with `unavailable`

    return gate
