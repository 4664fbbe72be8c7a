"""The models one server serves, and how a request's model and endpoint names resolve.

Several packages can share one process and one port, each with its own runner (limits,
batching, metrics labels). Names route: with one model, any name is that model (as model
servers that accept ``/v1/models/{anything}`` do); with several, an unknown name is a 404
naming the known ones; no name means the default model (the first, or the one marked).
Which of them are loaded is the :class:`~impasto.server.pool.LoadPool`'s business.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator

from ..errors import NotFound
from ..runner import Runner
from ..spec import EndpointSpec
from .pool import LoadPool


class Models:
    """An ordered, named set of runners with a default, loaded by a :class:`LoadPool`
    (every model at start unless ``lazy``; at most ``max_loaded`` at once)."""

    def __init__(
        self,
        runners: list[Runner],
        default: str | None = None,
        *,
        lazy: Iterable[str] = (),
        max_loaded: int | None = None,
    ) -> None:
        if not runners:
            raise ValueError("a server needs at least one model")
        self._by_name: dict[str, Runner] = {}
        for runner in runners:
            if runner.name in self._by_name:
                raise ValueError(f"two models are named {runner.name!r}")
            self._by_name[runner.name] = runner
        if default is not None and default not in self._by_name:
            raise ValueError(f"the default model {default!r} is not served")
        self.default = self._by_name[default] if default else runners[0]
        self.pool = LoadPool(runners, lazy=lazy, max_loaded=max_loaded)

    def start(self, on_loaded: Callable[[Runner], None] | None = None) -> list[asyncio.Task]:
        """Start loading the models that load at start (in the server's lifespan)."""
        return self.pool.start(on_loaded)

    def available(self, runner: Runner) -> bool:
        """Whether requests for ``runner`` are served now or after a load they trigger:
        what readiness reports (a lazy or evicted model is available, not loaded)."""
        if runner.closing or runner.state == "failed":
            return False
        return runner.ready or runner.on_demand is not None

    def state(self, runner: Runner) -> str:
        """``pending``, ``loading``, ``ready``, ``failed``, ``unloading``, ``unloaded`` (lazy,
        or evicted), ``waiting`` (asked for, waiting for room) or ``shutting_down``."""
        if runner.closing:
            return "shutting_down"
        if runner.name in self.pool.waiting and runner.state in ("pending", "unloaded"):
            return "waiting"
        if runner.state == "pending" and runner.on_demand is not None:
            return "unloaded"
        return runner.state

    def __iter__(self) -> Iterator[Runner]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def get(self, name: str | None) -> Runner:
        """The model called ``name`` (None, or any name when only one is served: the default)."""
        if name is None or len(self._by_name) == 1:
            return self.default
        runner = self._by_name.get(name)
        if runner is None:
            raise NotFound(f"no model named {name!r}; this server serves: {', '.join(self.names)}")
        return runner

    def split(self, name: str | None) -> tuple[str | None, str | None]:
        """``model:endpoint`` (how protocols that name only a model reach another endpoint)
        as its two parts; any other name as ``(name, None)``."""
        if name and ":" in name and name not in self._by_name:
            model, endpoint = name.rsplit(":", 1)
            return model, endpoint or None
        return name, None

    def resolve(self, model: str | None, endpoint: str | None) -> tuple[Runner, EndpointSpec]:
        runner = self.get(model)
        return runner, runner.endpoint(endpoint)
