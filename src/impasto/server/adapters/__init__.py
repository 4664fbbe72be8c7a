"""Protocol adapters: each reads its own request shape and writes its own responses over the
one call path (:mod:`impasto.server.callpath`)."""

from .native import NativeAdapter

__all__ = ["NativeAdapter"]
