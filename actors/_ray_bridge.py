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
- ``[id, "status", []]``: ``[alive nodes, live actors]``.

Why a separate process: Ray's driver ends its own process when it loses the cluster's
control store, and installs signal handlers; in here neither can touch the daemon, which
sees the bridge exit and reports the pool down. The bridge exits when the daemon does (its
stdin closes), and the Ray actors it owns end with it.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
from concurrent.futures import Future
from typing import Any

from actors.frames import read_frame, write_frame
from actors.remote_work import RemoteWorker

# Lose the control store, exit soon (Ray's default waits 60 s): the daemon then reports the
# pool down instead of waiting on a bridge that can no longer place anything.
os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", "10")

# Imported after the setting above, which Ray reads as it loads; typed Any: Ray's own hints
# are partial, and the daemon never imports Ray itself.
ray: Any = importlib.import_module("ray")
_RayTaskError: type[Exception] = importlib.import_module("ray.exceptions").RayTaskError
_log = logging.getLogger("actord.ray.bridge")


class _Bridge:
    def __init__(self, cpus: float) -> None:
        self.cpus = cpus
        self.stdout = sys.stdout.buffer
        # _write_lock guards stdout: answers are written from Ray's callback threads.
        self._write_lock = threading.Lock()
        # _actors_lock guards _actors: the slot's current Ray actor.
        self._actors_lock = threading.Lock()
        self._actors: dict[str, Any] = {}
        self._worker = ray.remote(RemoteWorker)

    def answer(self, *frame: Any) -> None:
        with self._write_lock:
            write_frame(self.stdout, list(frame))

    def serve(self) -> None:
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

    def _actor(self, slot: str) -> Any:
        with self._actors_lock:
            actor = self._actors.get(slot)
            if actor is None:
                actor = self._worker.options(
                    scheduling_strategy="SPREAD",
                    num_cpus=self.cpus,
                    max_restarts=0,
                    max_task_retries=0,
                ).remote()
                self._actors[slot] = actor
            return actor

    def _drop(self, slot: str, actor: Any = None) -> None:
        with self._actors_lock:
            current = self._actors.get(slot)
            if current is None or (actor is not None and current is not actor):
                return  # already replaced
            del self._actors[slot]
        try:
            ray.kill(current)
        except Exception as error:  # noqa: BLE001 - a lost actor cannot be killed: it is gone
            _log.warning("killing %s's Ray actor: %s", slot, error)

    def _call(self, request_id: int, slot: str, method: str, args: list[Any]) -> None:
        actor = self._actor(slot)
        try:
            ref = getattr(actor, method).remote(*args)
        except Exception as error:  # noqa: BLE001 - answered: the daemon fails the unit
            self._drop(slot, actor)
            self.answer(request_id, "died", f"{type(error).__name__}: {error}", 0.0)
            return
        future: Future[Any] = ref.future()
        future.add_done_callback(lambda done: self._done(request_id, slot, actor, done))

    def _done(self, request_id: int, slot: str, actor: Any, done: Future[Any]) -> None:
        try:
            kind, value, cpu = done.result()  # every RemoteWorker method answers a triple
        except _RayTaskError as error:  # the method raised: a fault of the code
            cause = getattr(error, "cause", None) or error
            self.answer(request_id, "error", f"{type(cause).__name__}: {cause}"[:2000], 0.0)
            return
        except Exception as error:  # noqa: BLE001 - the actor, its node or an object was lost
            self._drop(slot, actor)
            self.answer(request_id, "died", f"{type(error).__name__}: {error}"[:2000], 0.0)
            return
        self.answer(request_id, kind, value, cpu)

    def _status(self, request_id: int) -> None:
        try:
            nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        except Exception as error:  # noqa: BLE001 - answered: the daemon shows the pool down
            self.answer(request_id, "down", f"{type(error).__name__}: {error}", 0.0)
            return
        with self._actors_lock:
            actors = len(self._actors)
        self.answer(request_id, "ok", [nodes, actors], 0.0)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    address, namespace, cpus = sys.argv[1], sys.argv[2], float(sys.argv[3])
    stdout = sys.stdout.buffer
    try:
        local = {"include_dashboard": False} if address == "local" else {}
        ray.init(
            address=None if address == "local" else address,
            namespace=namespace,
            log_to_driver=False,
            configure_logging=False,
            **local,
        )
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    except Exception as error:  # noqa: BLE001 - the one answer the daemon waits for
        write_frame(stdout, [0, "down", f"{type(error).__name__}: {error}"[:2000], 0.0])
        return 3
    write_frame(stdout, [0, "ok", nodes, 0.0])
    try:
        _Bridge(cpus).serve()
    finally:
        ray.shutdown()  # the actors this driver made end with it
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
