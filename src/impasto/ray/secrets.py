"""Secrets on their way to replicas: sealed, so they never show in Ray's dashboard or logs.

``impasto deploy ray`` resolves a package's secrets where it runs (its secrets folder,
``IMPASTO_SECRET_*``) and hands them to each replica as an argument of the deployment,
wrapped in :class:`Sealed`: its ``repr`` names the secrets, never their values, and they
are never put in a runtime environment's ``env_vars`` (which the dashboard shows).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..package import Package
from ..secrets import Redactor, Secrets


class Sealed:
    """Secret values that print as their names only."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    def open(self) -> Secrets:
        return Secrets(self._values)

    def __repr__(self) -> str:
        return f"Sealed({', '.join(sorted(self._values))})"

    __str__ = __repr__

    def __getstate__(self) -> dict[str, str]:
        return self._values

    def __setstate__(self, state: dict[str, str]) -> None:
        self._values = state


def with_secrets(package: Package, sealed: Sealed | None) -> Package:
    """``package`` with the secrets resolved where the deployment was made."""
    if sealed is None:
        return package
    values = sealed.open()
    return dataclasses.replace(package, secrets=values, redactor=Redactor(values))
