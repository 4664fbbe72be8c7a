"""``octoai.service`` as OctoAI-style services use it: the ``Service`` base class.

A service subclasses it directly, is built with no arguments, has ``setup()`` run once
before the first ``infer()``, and declares its inputs and output as ``infer``'s annotations.
"""

from abc import ABC, abstractmethod
from typing import Any


class Service(ABC):
    """Base class of an OctoAI-style service (``setup()`` optional, ``infer()`` required)."""

    def setup(self) -> None:  # noqa: B027 (optional, as in the SDK)
        """Load weights and anything else ``infer`` needs; runs once, before any request."""

    @abstractmethod
    def infer(self, **kwargs: Any) -> Any:
        """One request: keyword arguments named and typed by this method's signature."""


# The SDK's discovery rule matches a direct base by module and class name.
Service.__module__ = "octoai.service"
