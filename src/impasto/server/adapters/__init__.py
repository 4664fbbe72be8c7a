"""Protocol adapters: each reads its own request shape and writes its own responses over the
one call path (:mod:`impasto.server.callpath`).

Every server gets impasto's own adapter first, then each factory :func:`protocol_adapters`
lists (called with the :class:`~impasto.server.callpath.CallPath`); an adapter gives
``routes()`` of its own and, optionally, ``claims()`` on paths several protocols share
(:mod:`impasto.server.dialects`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .cog import CogAdapter
from .kserve_v1 import KServeV1Adapter
from .native import NativeAdapter
from .octoai import OctoAIAdapter
from .oip import OIPAdapter
from .openai import OpenAIAdapter
from .sagemaker import SageMakerAdapter
from .truss import TrussAdapter


def protocol_adapters() -> list[Callable[[Any], Any]]:
    """The protocol adapters every server serves, after impasto's own."""
    return [
        TrussAdapter,
        SageMakerAdapter,
        OctoAIAdapter,
        OpenAIAdapter,
        OIPAdapter,
        KServeV1Adapter,
        CogAdapter,
    ]


__all__ = ["NativeAdapter", "TrussAdapter", "protocol_adapters"]
