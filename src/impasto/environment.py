"""The deployment environment a model's ``__init__`` and ``setup_environment`` receive.

Model code reads it two ways: as the environment's name (``environment == "production"``,
f-strings, logging) and as a mapping (``environment.get("name")``,
``environment["name"]``), the shape a Truss server passes. One value serves both.
"""

from __future__ import annotations

from collections.abc import ItemsView, KeysView, Mapping, ValuesView
from typing import Any


class Environment(str):
    """The environment's name, which is also the mapping ``{"name": <name>, ...}``.

    It is a ``str`` (compares, hashes, formats and serialises as the name) with the
    read-only mapping methods on top: ``get``, ``keys``, ``values``, ``items``,
    ``environment["name"]`` (integer indexes and slices index the name, as for any str),
    ``"name" in environment`` (true for a key, or a substring of the name) and
    ``dict(environment)``. It equals the name and any mapping with the same items.
    """

    _mapping: dict[str, Any]

    def __new__(cls, name: str, **extra: Any) -> Environment:
        self = super().__new__(cls, name)
        self._mapping = {"name": str(name), **extra}
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return self._mapping.get(key, default)

    def keys(self) -> KeysView[str]:
        return self._mapping.keys()

    def values(self) -> ValuesView[Any]:
        return self._mapping.values()

    def items(self) -> ItemsView[str, Any]:
        return self._mapping.items()

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return self._mapping[key]
        return str.__getitem__(self, key)

    def __contains__(self, key: object) -> bool:  # type: ignore[override]
        return key in self._mapping or (isinstance(key, str) and str.__contains__(self, key))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._mapping == dict(other)
        return str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = str.__hash__

    def __reduce__(self) -> Any:
        extra = {k: v for k, v in self._mapping.items() if k != "name"}
        return (_rebuild, (str(self), extra))

    def to_dict(self) -> dict[str, Any]:
        """The mapping reading, as a plain dict."""
        return dict(self._mapping)


def _rebuild(name: str, extra: dict[str, Any]) -> Environment:
    return Environment(name, **extra)
