"""The HTTP server: one app factory, one thin route module per protocol."""

from .app import ServerSettings, create_app

__all__ = ["ServerSettings", "create_app"]
