"""The models one server serves, and how a request's model and endpoint names resolve.

Several packages can share one process and one port, each with its own runner (limits,
batching, metrics labels). Names route: with one model, any name is that model (as model
servers that accept ``/v1/models/{anything}`` do); with several, an unknown name is a 404
naming the known ones; no name means the default model (the first, or the one marked).
"""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import NotFound
from ..runner import Runner
from ..spec import EndpointSpec


class Models:
    """An ordered, named set of runners with a default."""

    def __init__(self, runners: list[Runner], default: str | None = None) -> None:
        if not runners:
            raise ValueError("a server needs at least one model")
        self._by_name: dict[str, Runner] = {}
        for runner in runners:
            if runner.name in self._by_name:
                raise ValueError(f"two models are named {runner.name!r}")
            self._by_name[runner.name] = runner
        self.default = self._by_name[default] if default else runners[0]

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

    def resolve(self, model: str | None, endpoint: str | None) -> tuple[Runner, EndpointSpec]:
        runner = self.get(model)
        return runner, runner.endpoint(endpoint)
