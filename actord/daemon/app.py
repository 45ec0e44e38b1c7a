"""What the daemon hosts: an application found through config as ``module:factory``.

The runtime never imports the concrete actors (`actors/`); `actord run` loads the factory
named by ``daemon.app`` and calls it with the actor system and the config. The application
spawns its actors, adds its own control methods (``submit``, ``jobs``, ...) beside the
runtime's, and takes part in reload and shutdown.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from prometheus_client.registry import Collector

from ..control.methods import Method
from ..runtime.system import ActorSystem
from .config import Config, ConfigError

__all__ = ["App", "AppFactory", "Method", "load_app"]


class App(Protocol):
    """The daemon calls these from its main thread (methods run on connection threads)."""

    def start(self) -> None:
        """Spawn the application's actors; return once they run."""

    def collectors(self) -> list[Collector]:
        """Prometheus collectors of the application's own figures."""

    def methods(self) -> Mapping[str, Method]:
        """Control methods to serve besides the runtime's own."""

    def status(self) -> dict[str, Any]:
        """A few figures for ``status`` (plain msgpack-able values)."""

    def reconfigure(self, config: Config) -> list[str]:
        """Apply a reloaded config; returns the changes that need a restart to apply."""

    def drain(self, timeout: float) -> int | None:
        """Take no new work and wait up to `timeout` for work in flight; returns how many
        units of work are left for the next start, or None if the deadline came first."""

    def release(self, *, crashed: bool = False) -> None:
        """The daemon stops now: leave unfinished work recorded for the next start.
        `crashed`: because of a fault (an escalation), which the work may have caused."""


AppFactory = Callable[[ActorSystem, Config], App]


def load_app(target: str) -> AppFactory:
    """The factory named ``module:attribute``; a `ConfigError` naming ``daemon.app`` if not."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"daemon.app: must be module:factory, got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"daemon.app: cannot import {module_name!r}: {error}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"daemon.app: {target!r} is not a callable")
    app: AppFactory = factory
    return app
