"""The Ray bridge: a helper process that is the daemon's one Ray driver.

``python -m actors._ray_bridge ADDRESS NAMESPACE CPUS`` connects to Ray (``local`` starts a
private instance), answers ``[0, "ok", nodes]`` or ``[0, "down", why]``, then serves frames
(`frames.py`) from its stdin until it closes:

- ``[id, "call", [slot, method, args]]``: call `RemoteWorker.method(*args)` on the slot's Ray
  actor (made on first use, placed with the SPREAD strategy); answered
  ``[id, kind, value, cpu_seconds]`` when done, in any order. ``kind`` is the worker's own
  (``ok``, ``data``, ``io``, ``gone``), ``died`` (the actor or its node was lost: the slot
  gets a fresh actor on its next call) or ``error`` (the call raised: a fault of the code).
- ``[id, "drop", [slot]]``: kill the slot's actor (a runaway unit); answered ``ok``.
- ``[id, "status", []]``: the number of alive nodes.

Why a separate process: Ray's driver ends its own process when it loses the cluster's
control store, and installs signal handlers; in here neither can touch the daemon, which
sees the bridge exit and reports the pool down. The bridge exits when the daemon does (its
stdin closes), and the Ray actors it owns end with it.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import logging
import os
import queue
import signal
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from actors.frames import read_frame, write_frame
from actors.remote_work import HOLD_ENV, RemoteWorker

# Lose the control store, exit soon (Ray's default waits 60 s): the daemon then reports the
# pool down instead of waiting on a bridge that can no longer place anything.
os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", "10")

# Imported after the setting above, which Ray reads as it loads; typed Any: Ray's own hints
# are partial, and the daemon never imports Ray itself.
ray: Any = importlib.import_module("ray")
_RayTaskError: type[Exception] = importlib.import_module("ray.exceptions").RayTaskError
_NodeAffinity: Any = importlib.import_module(
    "ray.util.scheduling_strategies"
).NodeAffinitySchedulingStrategy
_log = logging.getLogger("actord.ray.bridge")


_SUSPECT_FOR = 120.0  # seconds a node where an actor was lost gets no new actor
# Seconds an actor has to come up on its node. Ray never fails the creation of an actor
# placed on a node that died before Ray noticed: past this, the node is suspect and the
# actor is killed (its queued calls answer `died`, and are sent again elsewhere).
_PLACE_TIMEOUT = float(os.environ.get("ACTORD_RAY_PLACE_TIMEOUT", "30"))


@dataclass(slots=True)
class _Placed:
    actor: Any
    target: str | None  # the node it was sent to (None: wherever Ray chose)
    deadline: float  # to be up by then (see _PLACE_TIMEOUT)
    node: str | None = None  # where it runs: learnt from its `ready` answer
    # Calls sent to it and not answered yet; guarded by the bridge's _actors_lock.
    pending: set[int] = field(default_factory=set)


class _Bridge:
    def __init__(self, cpus: float, stdout: Any) -> None:
        self.cpus = cpus
        self.stdout = stdout
        # _write_lock guards stdout: answers are written from two threads.
        self._write_lock = threading.Lock()
        # _actors_lock guards _actors (each slot's current Ray actor and its node) and
        # _suspects (nodes where an actor was lost, and when).
        self._actors_lock = threading.Lock()
        self._actors: dict[str, _Placed] = {}
        self._suspects: dict[str, float] = {}
        self._worker = ray.remote(RemoteWorker)
        # Calls done, from Ray's callback thread (which must not call back into Ray: a kill
        # from there can deadlock it) to the answering thread; None ends that thread.
        self._done_calls: queue.SimpleQueue[
            tuple[int, str, _Placed, Future[Any]] | tuple[()] | None
        ] = queue.SimpleQueue()
        self._answering = threading.Thread(target=self._answer_calls, name="bridge-answers")

    def answer(self, *frame: Any) -> None:
        with self._write_lock:
            write_frame(self.stdout, list(frame))

    def serve(self) -> None:
        self._answering.start()
        try:
            self._serve()
        finally:
            self._done_calls.put(None)
            self._answering.join()

    def _serve(self) -> None:
        stdin = sys.stdin.buffer
        while True:
            try:
                request_id, op, args = read_frame(stdin)
            except EOFError:
                return
            if op == "call":
                self._call(request_id, *args)
            elif op == "drop":
                self._drop(args[0])
                self.answer(request_id, "ok", None, 0.0)
            elif op == "status":
                threading.Thread(
                    target=self._status, args=(request_id,), name="bridge-status"
                ).start()
            else:
                self.answer(request_id, "error", f"unknown op {op!r}", 0.0)

    def _actor(self, slot: str) -> _Placed:
        with self._actors_lock:
            placed = self._actors.get(slot)
            if placed is not None:
                return placed
        target = self._spread()
        strategy: Any = "SPREAD"
        if target is not None:
            strategy = _NodeAffinity(node_id=target, soft=True)
        hold = os.environ.get(HOLD_ENV)  # a test's hook reaches the workers this way only
        actor = self._worker.options(
            scheduling_strategy=strategy,
            num_cpus=self.cpus,
            max_restarts=0,
            max_task_retries=0,
            runtime_env={"env_vars": {HOLD_ENV: hold}} if hold else None,
        ).remote()
        placed = _Placed(actor, target, time.monotonic() + _PLACE_TIMEOUT)
        with self._actors_lock:
            placed = self._actors.setdefault(slot, placed)
        ready: Future[Any] = actor.ready.remote().future()
        ready.add_done_callback(lambda done: self._done_calls.put((-1, slot, placed, done)))
        return placed

    def _spread(self) -> str | None:
        # The spread: the alive node with the fewest of our actors, leaving out nodes where
        # one was lost lately (a node that died before Ray noticed still looks alive).
        now = time.monotonic()
        with self._actors_lock:
            suspects = {n for n, when in self._suspects.items() if now - when < _SUSPECT_FOR}
            load: dict[str, int] = {}
            for placed in self._actors.values():
                where = placed.node or placed.target
                if where is not None:
                    load[where] = load.get(where, 0) + 1
        try:
            alive = _alive_nodes()
        except Exception as error:  # noqa: BLE001 - Ray's own spread is the fallback
            _log.warning("cannot list the nodes (%s): placing with Ray's SPREAD", error)
            return None
        candidates = [n for n in alive if n not in suspects] or alive
        if not candidates:
            return None
        return min(candidates, key=lambda n: (load.get(n, 0), n))

    def _check_placements(self) -> None:
        # Answering thread: an actor not up by its deadline is taken for lost.
        now = time.monotonic()
        with self._actors_lock:
            late = [
                (slot, placed)
                for slot, placed in self._actors.items()
                if placed.node is None and now > placed.deadline
            ]
        for slot, placed in late:
            why = f"its Ray actor was not up after {_PLACE_TIMEOUT:.0f}s"
            _log.warning("%s: %s: replaced", slot, why)
            self._drop(slot, placed, lost=True, why=why)

    def _drop(
        self, slot: str, placed: _Placed | None = None, *, lost: bool = False, why: str = ""
    ) -> None:
        # The slot's next call gets a fresh actor. The calls still pending on this one are
        # answered `died` here: Ray does not always fail the calls queued on an actor that
        # never came up (placed on a node that died before Ray noticed).
        with self._actors_lock:
            current = self._actors.get(slot)
            if current is None or (placed is not None and current is not placed):
                return  # already replaced
            del self._actors[slot]
            where = current.node or current.target
            if lost and where is not None:
                self._suspects[where] = time.monotonic()
            pending, current.pending = current.pending, set()
        for request_id in sorted(pending):
            self.answer(request_id, "died", why or "its Ray actor was killed", 0.0)
        try:
            ray.kill(current.actor)
        except Exception as error:  # noqa: BLE001 - a lost actor cannot be killed: it is gone
            _log.warning("killing %s's Ray actor: %s", slot, error)

    def _call(self, request_id: int, slot: str, method: str, args: list[Any]) -> None:
        try:
            self._submit(request_id, slot, method, args)
        except Exception as error:  # noqa: BLE001 - answered: the daemon fails the unit
            _log.exception("%s: the call could not be made", slot)
            self.answer(request_id, "error", f"{type(error).__name__}: {error}"[:2000], 0.0)

    def _submit(self, request_id: int, slot: str, method: str, args: list[Any]) -> None:
        while True:  # an actor dropped as it was made (its creation failed) is replaced
            placed = self._actor(slot)
            with self._actors_lock:
                if self._actors.get(slot) is placed:
                    placed.pending.add(request_id)
                    break
        try:
            ref = getattr(placed.actor, method).remote(*args)
        except Exception as error:  # noqa: BLE001 - answered: the daemon sends it again
            self._drop(slot, placed, lost=True, why=f"{type(error).__name__}: {error}")
            return
        future: Future[Any] = ref.future()
        future.add_done_callback(
            lambda done: self._done_calls.put((request_id, slot, placed, done))
        )

    def _answer_calls(self) -> None:
        checked = time.monotonic()
        while True:
            try:
                item = self._done_calls.get(timeout=1.0)
            except queue.Empty:
                item = ()
            if item is None:
                return
            if item:
                self._done(*item)
            if time.monotonic() - checked >= 1.0:  # busy or idle: once a second
                checked = time.monotonic()
                self._check_placements()

    def _done(self, request_id: int, slot: str, placed: _Placed, done: Future[Any]) -> None:
        if request_id >= 0:
            with self._actors_lock:
                if request_id not in placed.pending:
                    return  # answered already, as its actor was dropped
                placed.pending.discard(request_id)
        try:
            kind, value, cpu = done.result()  # every RemoteWorker method answers a triple
        except _RayTaskError as error:  # the method raised: a fault of the code
            cause = getattr(error, "cause", None) or error
            if request_id >= 0:
                self.answer(request_id, "error", f"{type(cause).__name__}: {cause}"[:2000], 0.0)
            return
        except Exception as error:  # noqa: BLE001 - the actor, its node or an object was lost
            why = f"{type(error).__name__}: {error}"[:2000]
            if request_id >= 0:
                self.answer(request_id, "died", why, 0.0)
            self._drop(slot, placed, lost=True, why=why)
            return
        if request_id < 0:  # the actor's `ready`: where it was placed
            placed.node = str(value)
            return
        self.answer(request_id, kind, value, cpu)

    def _status(self, request_id: int) -> None:
        try:
            nodes = len(_alive_nodes())
        except Exception as error:  # noqa: BLE001 - answered: the daemon shows the pool down
            self.answer(request_id, "down", f"{type(error).__name__}: {error}", 0.0)
            return
        self.answer(request_id, "ok", nodes, 0.0)


def _alive_nodes() -> list[str]:
    """The ids of the cluster's alive nodes (asks the cluster's control store)."""
    return [str(node["NodeID"]) for node in ray.nodes() if node.get("Alive")]


def main() -> int:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # as the daemon: its stacks
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    address, namespace, cpus = sys.argv[1], sys.argv[2], float(sys.argv[3])
    # The frames get a descriptor of their own, and fd 1 goes to stderr: nothing Ray prints
    # can land in the middle of a frame.
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        local = {"include_dashboard": False} if address == "local" else {}
        ray.init(
            address=None if address == "local" else address,
            namespace=namespace,
            log_to_driver=False,
            configure_logging=False,
            **local,
        )
        nodes = len(_alive_nodes())
    except Exception as error:  # noqa: BLE001 - the one answer the daemon waits for
        write_frame(stdout, [0, "down", f"{type(error).__name__}: {error}"[:2000], 0.0])
        return 3
    write_frame(stdout, [0, "ok", nodes, 0.0])
    code = 0
    try:
        _Bridge(cpus, stdout).serve()
    except Exception:  # noqa: BLE001 - the bridge's one boundary: logged, then it exits 1
        _log.exception("the Ray bridge failed")
        code = 1
    if address == "local":
        ray.shutdown()  # the private instance's processes are this driver's children
        return code
    # Exit at once: the cluster ends a dead driver's actors (they share its fate), and the
    # daemon's stop does not wait for a disconnect.
    with contextlib.suppress(OSError):
        stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
