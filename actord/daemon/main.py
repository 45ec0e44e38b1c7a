"""`actord run`: the daemon's main loop.

The main thread owns the lifecycle. Signal handlers only put the signal on the main loop's
queue (as gunicorn's arbiter does); control methods that change the lifecycle (``reload``,
``shutdown``) put a request there too, and the supervisor's escalation does the same.

- SIGTERM / SIGINT / ``shutdown``: STOPPING=1; take no new connections or jobs; let running
  jobs finish until ``daemon.drain_deadline``; leave the rest journaled; stop every actor
  within a short grace after it; exit 0, also when an actor would not stop in time (its job
  is journaled: it runs again at the next start). A stop during start-up stops what started.
- SIGHUP / ``reload``: read the config again. An invalid file is reported and the old config
  stays; a valid one is applied (pool sizes, roots, log level, job limit) without losing work.
- An escalation (an actor that keeps failing): exit 1, so that systemd restarts the daemon.
  It is the only way to exit 1 once the daemon has started.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from .. import __version__
from ..control.methods import Dispatcher, runtime_methods
from ..control.server import ControlServer, bound_address
from ..runtime import logctx
from ..runtime.errors import (
    ActorDead,
    ActordError,
    ErrorCode,
    ExitCode,
    Refused,
    StopTimeout,
    UnknownActor,
)
from ..runtime.scaler import PoolScaler
from ..runtime.stats import ActorState
from ..runtime.supervisor import Escalation
from ..runtime.system import ActorSystem
from . import dump
from .app import App, load_app
from .checks import describe_os_error, dotted_keys, host_problems, metrics_in_use
from .config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from .health import GetSample, Monitor, MonitorSample, SetStuckAfter
from .limits import connection_caps, raise_nofile
from .metrics import DaemonCollector, MetricsServer, RuntimeCollector, parse_address
from .sdnotify import Notifier, listen_fds, watchdog_interval
from .signals import STOPS, SignalQueue, StartInterrupted

__all__ = ["Daemon", "ExitCode", "state_dir_in_use"]

_log: Final = logging.getLogger("actord.daemon")
MONITOR: Final = "monitor"  # the health actor's name
_STATUS_EVERY: Final = 5.0  # seconds between STATUS= updates to systemd
# After the drain: how long the actors have to stop, and the connections to close. Both come
# after `drain_deadline`, and together stay under a second, so a stop takes at most that long.
_ACTORS_STOP: Final = 0.5
_CONNECTIONS_STOP: Final = 0.3
# Keys that a reload cannot change in place (reported as needing a restart); the application
# adds its own (see `App.reconfigure`).
_RESTART_KEYS: Final = (
    "daemon.socket",
    "daemon.state_dir",
    "daemon.app",
    "daemon.socket_group",
    "daemon.max_connections",
    "daemon.frame_limit",
    "daemon.idle_timeout",
    "daemon.new_journal",  # read when the journal is opened, at the start
    "metrics.address",
    "metrics.max_connections",
    "metrics.read_timeout",
)
_MONITOR_EVERY: Final = 1.0  # seconds between the monitor's samples (and watchdog pings)
_MONITOR_ASK: Final = 5.0  # seconds a reload waits for the monitor to take a new threshold
_SCALE_CANCEL: Final = 10.0  # seconds a reload waits for a scale step under way to end
_STALE_AFTER: Final = 5.0  # seconds without a monitor sample before /healthz says 503


class _StartStopped(Exception):
    """A stop signal came while the daemon was starting: what started is stopped."""


class _StartFailed(ActordError):
    """An actor escalated while the daemon was starting: it says which, and why."""

    code = ErrorCode.INTERNAL


@dataclass(frozen=True, slots=True)
class _Reload:
    done: Future[dict[str, Any]] = field(default_factory=Future)


@dataclass(frozen=True, slots=True)
class _Shutdown:
    reason: str


@dataclass(frozen=True, slots=True)
class _Escalated:
    escalation: Escalation


class Daemon:
    """Run with `run()` on the main thread; returns the process's exit code."""

    def __init__(
        self,
        config_path: str | None = None,
        overrides: Mapping[str, object] | None = None,
        env: Mapping[str, str] | None = None,
        signals: SignalQueue | None = None,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        if config_path is None and DEFAULT_CONFIG_PATH.exists():
            config_path = str(DEFAULT_CONFIG_PATH)
        self.config_path = config_path
        self.overrides = dict(overrides or {})
        self.config = self._load()  # raises ConfigError before anything starts
        # What restart-only keys are compared with: the config the daemon started with, not
        # the last one reloaded, so a change stays reported by every reload until a restart.
        self._started_config = self.config
        # Restart-only keys by name (an ordered set): ours, and the application's as it
        # reports them.
        self._restart_keys: dict[str, None] = dict.fromkeys(_RESTART_KEYS)
        self.generation = 1  # bumped by each applied reload
        self._pending: list[str] = []  # restart-only keys changed (as of the last reload)
        self.started = time.monotonic()
        self.pid = os.getpid()
        self._fixed_status: dict[str, Any] = {}  # the figures of `status` that never change
        self.draining = False
        # _scaled_lock guards _scaled: pool -> the size `scale` last asked for it, while that
        # differs from its configured size (connection threads write it, the main loop's
        # reload and `status` read it).
        self._scaled_lock = threading.Lock()
        self._scaled: dict[str, int] = {}
        self.ready = False  # READY=1 sent (and not yet stopping): `/readyz` says 200
        # The monitor's latest sample and when it came (monotonic), replaced whole by the
        # monitor's thread, read by the metrics server's (`/healthz`).
        self._sample: tuple[float, MonitorSample] | None = None
        self._monitor_every = _MONITOR_EVERY
        # Signals, reload and shutdown requests and escalations, for the main loop. The
        # handlers may be installed long before (by `actord run`, first thing).
        self._owns_signals = signals is None
        self._signals = signals or SignalQueue()
        self.notifier = Notifier(self.env)

    def _load(self) -> Config:
        return load_config(self.config_path, self.overrides).resolved(self.env)

    # -- hooks for the runtime's control methods (connection threads) -----------------------

    def status(self) -> dict[str, Any]:
        # `status` is polled: what cannot change while the daemon runs is built once.
        return {
            **self._fixed_status,
            "uptime": round(time.monotonic() - self.started, 3),
            "generation": self.generation,
            "draining": self.draining,
            "actors": self.system.member_count(),  # as many as `actors` lists
            "pools": self._pools(),
            "connections": self.server.connections,
            **self.app.status(),
        }

    def _fix_status(self) -> None:
        # Once the control server and the metrics exist, before the socket answers.
        self._fixed_status = {
            "version": __version__,
            "pid": self.pid,
            "config": self.config_path,
            "socket": self.server.path,  # where it really listens (an activated socket too)
            "state_dir": self._started_config.daemon.state_dir,  # a reload cannot move it
            "metrics": None if self.metrics is None else self.metrics.url,
        }

    def reload(self, timeout: float) -> dict[str, Any]:
        if self.draining:
            raise Refused(ErrorCode.BUSY, "actord is stopping: nothing to reload")
        request = _Reload()
        self._signals.put(request)
        try:
            return request.done.result(timeout)
        except ConfigError as error:
            raise Refused(ErrorCode.BAD_REQUEST, str(error)) from None
        except ActordError as error:
            raise Refused(ErrorCode.INTERNAL, f"reload failed: {error}") from None
        except FutureTimeout:
            raise Refused(
                ErrorCode.BUSY, f"the main loop did not reload within {timeout:.0f}s"
            ) from None

    def unhealthy(self) -> str | None:
        """Why the daemon is not healthy (`/healthz`), or None: the watchdog's view, an actor
        stuck or failed, or a monitor that stopped sampling."""
        seen = self._sample
        if seen is None:
            return "no health sample yet: the daemon is starting"
        at, sample = seen
        age = time.monotonic() - at
        if age > max(_STALE_AFTER, 5 * self._monitor_every):
            return f"the monitor has not sampled for {age:.0f}s"
        if sample.healthy:
            return None
        failed = [a.name for a in sample.actors if a.state is ActorState.FAILED]
        why = [f"stuck on one message: {', '.join(sample.stuck)}"] if sample.stuck else []
        why += [f"failed: {', '.join(failed)}"] if failed else []
        return "unhealthy: " + "; ".join(why)

    def not_ready(self) -> str | None:
        """Why the daemon takes no work now (`/readyz`), or None once READY, until a stop."""
        if self.draining:
            return "draining: actord is stopping and takes no new jobs"
        if not self.ready:
            return "starting: not ready yet"
        return None

    def shutdown(self) -> None:
        self._signals.put(_Shutdown("requested over the control socket"))

    def scale(self, pool: str, size: int, asker: str = "an embedding caller") -> dict[str, Any]:
        if self.draining:
            raise Refused(ErrorCode.BUSY, "actord is stopping: no resize now")
        with self._scaled_lock:  # one scale at a time: the scaler's target and ours agree
            plan = self.scaler.request(pool, size)
            configured = _setting(self.config, f"{pool}.size")
            if size == configured:
                self._scaled.pop(pool, None)
            else:
                self._scaled[pool] = size
        _log.info(
            "scale: pool %s from %d to %d members (configured %s), asked by %s",
            pool,
            plan.current,
            size,
            configured if isinstance(configured, int) else "-",
            asker,
        )
        return plan.to_wire()

    def _pools(self) -> dict[str, dict[str, Any]]:
        """Each pool with a configured size: its size now, the configured one, and whether
        `scale` changed it (for `status` and `config`)."""
        with self._scaled_lock:
            scaled = dict(self._scaled)
        pools = {}
        for name in self.system.names():
            configured = _setting(self.config, f"{name}.size")
            if not isinstance(configured, int) and name not in scaled:
                continue
            try:
                size = self.system.size(name)
            except ActordError:
                continue  # a single actor, or one gone meanwhile
            pools[name] = {
                "size": size,
                "configured": configured if isinstance(configured, int) else None,
                "scaled": name in scaled,
            }
        return pools

    # -- the main thread ---------------------------------------------------------------------

    def run(self) -> int:
        self._signals.install()  # idempotent: `actord run` did it first thing
        logctx.set_outside("daemon")  # records of threads that run no actor say so
        try:
            return self._run()
        finally:
            logctx.set_outside("-")
            if self._owns_signals:
                self._signals.restore()

    def _run(self) -> int:
        config = self.config
        if config.daemon.log_format == "json":
            logctx.configure(config.daemon.log_level, json_lines=True)
        logging.getLogger().setLevel(config.daemon.log_level)
        _log.info("actord %s starting; config: %s", __version__, self._config_origin())
        self._check_host(config)
        self._nofile = raise_nofile()  # first: the parse workers inherit it
        state = Path(config.daemon.state_dir)
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = self._lock_state_dir(state)
        self.system = ActorSystem(
            default_capacity=config.mailbox_capacity,
            on_escalate=lambda escalation: self._signals.put(_Escalated(escalation)),
        )
        dump.watch_actors(self.system.stats)  # SIGUSR1's dump names the actors' threads
        try:
            return self._serve(config)
        except (_StartStopped, StartInterrupted):
            _log.info("stopped while starting: nothing is left running")
            return ExitCode.OK
        finally:
            dump.watch_actors(None)
            lock.close()

    def _config_origin(self) -> str:
        if self.config_path is None:
            return f"built-in defaults (no --config, and no {DEFAULT_CONFIG_PATH})"
        if self.config_path == str(DEFAULT_CONFIG_PATH):
            return f"{self.config_path} (the default path; --config FILE reads another)"
        return self.config_path

    def _check_host(self, config: Config) -> None:
        # Before anything starts: a missing group or an unreachable root is named by its key
        # now, not found by a pool or a connection later. The socket and the metrics port are
        # checked where they are bound (they may come from systemd).
        for problem in host_problems(config, listeners=False):
            if problem.fatal:
                raise ConfigError(str(problem))
            _log.warning("%s", problem)

    def _check_start(self) -> None:
        # Between start-up steps: a SIGTERM/SIGINT that came meanwhile ends the start.
        if self._signals.stop_requested:
            raise _StartStopped

    def _lock_state_dir(self, state: Path) -> Any:
        lock = open(state / "actord.lock", "w")  # noqa: SIM115 - held for the daemon's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ConfigError(f"daemon.state_dir: {state} is in use by another actord") from None
        return lock

    def _serve(self, config: Config) -> int:
        # Until the application starts its actors, a stop raises wherever the main thread is
        # (the application's imports take most of a start): nothing is started to release.
        self.scaler = PoolScaler(self.system, max_size=config.daemon.max_pool_size)
        self.app: App = load_app(config.daemon.app)(self.system, config)
        self.metrics: MetricsServer | None = None
        activated = self._activated()
        started: ControlServer | None = None
        try:
            # From here, steps that start things are not cut in the middle: a stop is
            # queued, and seen between them, or interrupts a step that only waits.
            self._signals.interrupting = False
            self._check_start()
            self.app.start()
            self._start_health(config)
            with self._signals.interrupted():
                self._ping_every_actor(timeout=30.0)
            self._check_start()
            if self.system.escalations:  # an actor that cannot start (a refused journal, ...)
                failed = self.system.escalations[0]
                raise _StartFailed(f"actor {failed.actor} failed: {failed.error}")
            with self._signals.interrupted():
                self._first_sample()
            self.scaler.start()
            methods = {**runtime_methods(self.system, self), **self.app.methods()}
            self.dispatcher = Dispatcher(methods)
            self._caps = connection_caps(
                self._nofile, config.daemon.max_connections, config.metrics.max_connections
            )
            self.server = ControlServer(
                config.daemon.socket,
                self.dispatcher,
                group=config.daemon.socket_group,
                max_connections=self._caps[0],
                frame_limit=config.daemon.frame_limit,
                idle_timeout=config.daemon.idle_timeout,
                listener=activated.get("control"),
            )
            # Metrics first: once the control socket answers, `status` names their URL.
            self._start_metrics(config, activated.get("metrics"))
            self._check_start()
            self._fix_status()
            self.server.start()
            started = self.server
        except BaseException as error:
            self._signals.interrupting = False  # the cleanup runs to its end
            if isinstance(error, (_StartStopped, StartInterrupted)):
                self.notifier.stopping()
            self._release_quietly()  # jobs it had begun go back to the queue: no crash
            if self.metrics is not None:
                self.metrics.stop(timeout=1.0)
            if started is not None:
                started.stop(timeout=1.0)
            self._stop_system(5.0)
            raise
        try:
            _log.info("actord %s listening on %s", __version__, self.server.path)
            self.notifier.ready(self._summary())
            self.ready = True
            return self._loop()
        except BaseException:
            _log.exception("the main loop failed: stopping")
            self.server.stop(timeout=1.0)
            if self.metrics is not None:
                self.metrics.stop(timeout=1.0)
            self._stop_system(5.0)
            raise

    def _start_health(self, config: Config) -> None:
        # The monitor watches every actor, the application's too; under a systemd watchdog
        # it pings only while every actor is healthy, so a wedged actor stops the pings.
        # The monitor samples every second, or at the watchdog's half-timeout if that is
        # shorter; it pings at each healthy sample, so the log gives that period.
        wanted = watchdog_interval(self.env)
        every = _MONITOR_EVERY if wanted is None else min(_MONITOR_EVERY, wanted)
        if wanted is not None:
            _log.info(
                "systemd watchdog (timeout %.1fs): a ping every %.1fs while every actor is healthy",
                2 * wanted,
                every,
            )
        self._monitor_every = every
        ping = self.notifier.watchdog if wanted is not None else None
        self.system.spawn(
            lambda: Monitor(
                self.system,
                interval=every,
                stuck_after=self.config.daemon.stuck_after,  # a restarted one: the reloaded
                on_healthy=ping,
                on_sample=self._sampled,
            ),
            MONITOR,
        )

    def _first_sample(self) -> None:
        # `/healthz` has the watchdog's view from READY on, not only from the next tick.
        try:
            self._sampled(self.system.lookup(MONITOR).ask(GetSample(), timeout=_MONITOR_ASK))
        except ActordError as error:  # its tick brings one; until then 503, and why
            _log.warning("no health sample before READY: %s", error)

    def _sampled(self, sample: MonitorSample) -> None:
        self._sample = (time.monotonic(), sample)  # the monitor's thread

    def _ping_every_actor(self, timeout: float) -> None:
        # spawn() returns before on_start has run; a ping is answered by the receive loop, so
        # an answer from each actor means it started (READY=1 must not come before).
        deadline = time.monotonic() + timeout
        for name in self.system.names():
            try:
                self.system.lookup(name).ping(timeout=max(0.1, deadline - time.monotonic()))
            except (UnknownActor, ActorDead):
                continue  # gone meanwhile (a recovered job's reader that already finished)

    def _activated(self) -> dict[str, socket.socket]:
        """Listening sockets from systemd (LISTEN_FDS): ``control`` (or the only unnamed one)
        and ``metrics``. Without socket activation, the daemon binds its own."""
        fds = listen_fds(self.env)
        sockets: dict[str, socket.socket] = {}
        for name, fd in fds.items():
            os.set_inheritable(fd, False)  # not for the parse workers
            key = (
                "control"
                if name == "control" or (len(fds) == 1 and name.startswith("fd"))
                else name
            )
            sockets[key] = socket.socket(fileno=fd)
            where = bound_address(sockets[key]) or "unbound"
            _log.info("socket activation: %s is fd %d, %s", key, fd, where)
        return sockets

    def _start_metrics(self, config: Config, listener: socket.socket | None) -> None:
        if not config.metrics.address and listener is None:
            return
        registry = CollectorRegistry()  # ours alone: not prometheus_client's global one
        registry.register(
            RuntimeCollector(self.system.stats, self.system.channel, census=self.system.census)
        )
        registry.register(
            DaemonCollector(
                __version__,
                lambda: self.generation,
                self.dispatcher.snapshot,
                lambda: self.server.connections,
            )
        )
        for collector in self.app.collectors():
            registry.register(collector)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        host, port = parse_address(config.metrics.address or "127.0.0.1:0")
        try:
            self.metrics = MetricsServer(
                registry,
                host,
                port,
                listener=listener,
                max_connections=self._caps[1],
                read_timeout=config.metrics.read_timeout,
                healthy=self.unhealthy,
                ready=self.not_ready,
            )
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ConfigError(metrics_in_use(config.metrics.address)) from None
            raise ConfigError(
                f"metrics.address: cannot serve on {config.metrics.address}: "
                f"{describe_os_error(error)}"
            ) from None
        self.metrics.start()
        _log.info("metrics at %s", self.metrics.url)

    def _loop(self) -> int:
        while True:
            try:
                event = self._signals.get(_STATUS_EVERY)
            except queue.Empty:
                self.notifier.status(self._summary())
                continue
            if event == signal.SIGHUP:
                self._reload(None)
            elif isinstance(event, _Reload):
                self._reload(event.done)
            elif isinstance(event, _Escalated):
                escalation = event.escalation
                _log.critical("stopping: actor %s keeps failing", escalation.actor)
                self._stop(drain=False, crashed=True)
                return ExitCode.FAILED
            elif isinstance(event, _Shutdown) or (isinstance(event, int) and event in STOPS):
                reason = (
                    event.reason if isinstance(event, _Shutdown) else signal.Signals(event).name
                )
                _log.info("stopping (%s): draining for up to %.1fs", reason, self._deadline)
                return self._stop(drain=True)

    @property
    def _deadline(self) -> float:
        return self.config.daemon.drain_deadline

    def _reload(self, done: Future[dict[str, Any]] | None) -> None:
        self.notifier.reloading()
        try:
            config = self._load()
        except ConfigError as error:
            self._reload_failed(done, "refused", error)
            return
        for pool in self.scaler.pending():  # a reload that sets a pool's size wins over a scale
            resized = _setting(self.config, f"{pool}.size") != _setting(config, f"{pool}.size")
            if resized and not self.scaler.cancel(pool, _SCALE_CANCEL):
                _log.warning("pool %s: a scale step is still under way", pool)
        try:
            reported = self.app.reconfigure(config)
        except ActordError as error:
            # Partly applied at worst (pool sizes are each all-or-nothing); the old config
            # stays the one reported, and the operator hears why.
            self._reload_failed(done, "failed", error)
            return
        pending = self._restart_needed(config, reported)
        if config.daemon.log_format != self.config.daemon.log_format:
            logctx.configure(config.daemon.log_level, json_lines=config.daemon.log_format == "json")
        logging.getLogger().setLevel(config.daemon.log_level)
        if config.daemon.stuck_after != self.config.daemon.stuck_after:
            try:  # the monitor applies it from its next sample
                self.system.lookup(MONITOR).ask(
                    SetStuckAfter(config.daemon.stuck_after), timeout=_MONITOR_ASK
                )
            except ActordError as error:
                self._reload_failed(done, "failed", error)
                return
        changed = config_changes(self.config, config)
        kept = self._scaled_after_reload(config)
        self.config = config
        self.scaler.max_size = config.daemon.max_pool_size
        self._pending = pending
        self.generation += 1
        if pending:
            _log.warning("reloaded; these changes apply at the next start: %s", ", ".join(pending))
        _log.info(
            "config generation %d applied: %s",
            self.generation,
            ", ".join(
                f"{key} {json.dumps(old)} -> {json.dumps(new)}"
                for key, (old, new) in changed.items()
            )
            or "nothing changed",
        )
        self.notifier.ready(self._summary())
        if done is not None:
            done.set_result(
                {
                    "generation": self.generation,
                    "restart_needed": pending,
                    "changed": changed,
                    "scaled_kept": kept,
                }
            )

    def _scaled_after_reload(self, config: Config) -> dict[str, int]:
        """A reload keeps each scaled pool's size, unless it changes that pool's configured
        size (the pool has that size now: the application resized it). Says so in the log;
        returns the pools that keep a scaled size."""
        kept = {}
        with self._scaled_lock:
            for pool, size in list(self._scaled.items()):
                before = _setting(self.config, f"{pool}.size")
                after = _setting(config, f"{pool}.size")
                if before != after:
                    del self._scaled[pool]
                    _log.info("pool %s: the reload set its configured size, %s", pool, after)
                    continue
                kept[pool] = size
                _log.info(
                    "pool %s keeps its scaled size %d (configured %s): a reload does not undo "
                    "a scale; actorctl scale %s %s does",
                    pool,
                    size,
                    after,
                    pool,
                    after,
                )
        return kept

    def effective_config(self) -> dict[str, Any]:
        """For `actorctl config`: the running config, where it came from, what reloads have
        changed since the start, and what of that waits for a restart."""
        return {
            "path": self.config_path,
            "generation": self.generation,
            "config": _wire(asdict(self.config)),
            "changed_since_start": config_changes(self._started_config, self.config),
            "restart_needed": list(self._pending),
            "pools": self._pools(),
        }

    def _restart_needed(self, config: Config, reported: list[str]) -> list[str]:
        """Every restart-only key whose value now differs from the one the daemon started
        with; `reported` are the keys the application found changed since the last reload
        (it compares with that one): they are restart-only keys from now on."""
        self._restart_keys.update(dict.fromkeys(reported))
        pending = []
        for key in self._restart_keys:
            before, after = _setting(self._started_config, key), _setting(config, key)
            # A key that names no setting cannot be compared: pending until the restart.
            if before is _NO_SETTING or before != after:
                pending.append(key)
        return pending

    def _reload_failed(
        self, done: Future[dict[str, Any]] | None, how: str, error: ActordError
    ) -> None:
        _log.error("reload %s, the running config stays: %s", how, error)
        self.notifier.ready(f"reload {how}: {error}")
        if done is not None:
            done.set_exception(error)

    def _stop(self, *, drain: bool, crashed: bool = False) -> int:
        # The drain has the whole deadline; stopping what is left then takes under a second.
        began = time.monotonic()
        deadline = began + self._deadline
        self.draining = True  # before STOPPING=1: whoever hears that sees `draining`
        self.notifier.stopping()
        # The socket stays open while jobs drain: `status` says `draining` (a submit is
        # refused by the store); it closes once the drain is over.
        if drain:
            try:
                left = self.app.drain(max(0.0, deadline - time.monotonic()))
            except ActordError as error:  # the application broke meanwhile: stop all the same
                _log.error("the drain failed: %s", error)
                left = None
            if left is None:
                _log.info("drain deadline reached: running jobs go back to the queue")
            else:
                _log.info("drained; %d jobs stay journaled for the next start", left)
        drained = time.monotonic()
        self.server.close_listener()
        self._release_quietly(crashed=crashed)
        # Every actor told at once, before the connections are closed: a pool busy with CPU
        # work (a thread parser holds the GIL) ends after its unit, and the rest is quick.
        self.system.halt()
        released = time.monotonic()
        self.server.stop(timeout=_CONNECTIONS_STOP)
        if self.metrics is not None:
            self.metrics.stop(timeout=_CONNECTIONS_STOP)
        closed = time.monotonic()
        self._stop_system(_ACTORS_STOP)
        _log.info(
            "stopped in %.2fs: drain %.2fs, release %.2fs, connections %.2fs, actors %.2fs",
            time.monotonic() - began,
            drained - began,
            released - drained,
            closed - released,
            time.monotonic() - closed,
        )
        return ExitCode.OK

    def _release_quietly(self, *, crashed: bool = False) -> None:
        # Running jobs go back to the queue. `crashed` (an escalation): each counts a crash
        # retry, as a kill -9 under it would, so a job that takes the daemon down is capped.
        try:
            self.app.release(crashed=crashed)
        except UnknownActor as error:  # it never started: nothing of it is running
            _log.debug("nothing to release: %s", error)
        except ActordError as error:  # not started far enough, or the store is wedged
            _log.warning("running jobs not released (they count as a crash): %s", error)

    def _stop_system(self, timeout: float) -> bool:
        # A handler that will not return cannot be interrupted: its job is journaled (it
        # runs again at the next start), so the stop still succeeds; the log says which.
        self.scaler.close()  # no further step; one under way ends as its members stop
        try:
            self.system.stop(graceful=False, timeout=timeout)
        except StopTimeout as error:
            _log.error("stopping without waiting for: %s", ", ".join(error.stuck))
            return False
        finally:
            self.scaler.stop(timeout)
        return True

    def _summary(self) -> str:
        figures = self.app.status()
        jobs = ", ".join(f"{k} {v}" for k, v in figures.items() if isinstance(v, int))
        return f"generation {self.generation}; {len(self.system.names())} actors; {jobs}"


_NO_SETTING: Final = object()


def config_changes(before: Config, after: Config) -> dict[str, list[Any]]:
    """Every key whose value differs: key -> [before, after] (msgpack-able)."""
    changes = {}
    for key in dotted_keys(before):
        old, new = _setting(before, key), _setting(after, key)
        if old != new:
            changes[key] = [_wire(old), _wire(new)]
    return changes


def _wire(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _wire(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_wire(item) for item in value]
    return value


def _setting(config: Config, key: str) -> object:
    """The value of a dotted key (``parser.executor``, ``mailbox_capacity``) in `config`."""
    value: object = config
    for part in key.split("."):
        value = getattr(value, part, _NO_SETTING)
        if value is _NO_SETTING:
            break
    return value


def state_dir_in_use(state: Path) -> bool:
    """Whether a running actord holds `state` (its lock), without taking it for long."""
    try:
        with open(state / "actord.lock", "rb") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    except OSError:
        return False  # no lock file: nothing ran there, or we cannot tell
    return False


def _stuck_threads() -> list[str]:
    main = threading.main_thread()
    return [t.name for t in threading.enumerate() if t is not main and not t.daemon]


def exit_hard_if_stuck(code: int) -> int:
    """After a stop: if a non-daemon thread is stuck (a handler that will not return), say
    which and leave anyway with `code`: the exit code must reach systemd."""
    stuck = _stuck_threads()
    if stuck:
        _log.warning("leaving threads behind at exit: %s", ", ".join(stuck))
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)
    return code
