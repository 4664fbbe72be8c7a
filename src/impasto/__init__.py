"""impasto: package, serve and scale diffusion models (and any Python model) over HTTP.

The flat public API; everything else is private modules.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .client import Client
from .config import PackageConfig, load_config, parse_config
from .context import Event, OutputPrefs, RequestContext
from .environment import Environment
from .errors import (
    Canceled,
    ConfigError,
    ImpastoError,
    InputError,
    MalformedInput,
    ModelDefinitionError,
    ModelError,
    ModelHTTPError,
    NotFound,
    NotReady,
    Overloaded,
    PackageError,
    PayloadTooLarge,
    PredictTimeout,
    StoreError,
)
from .media import Audio, File, Image, Video
from .package import Package, load_package
from .runner import Runner
from .serving import build_app
from .spec import EndpointSpec, ModelSpec, endpoint, inspect_model

__all__ = [
    "Audio",
    "Canceled",
    "Client",
    "ConfigError",
    "EndpointSpec",
    "Environment",
    "Event",
    "File",
    "Image",
    "ImpastoError",
    "InputError",
    "MalformedInput",
    "ModelDefinitionError",
    "ModelError",
    "ModelHTTPError",
    "ModelSpec",
    "NotFound",
    "NotReady",
    "OutputPrefs",
    "Overloaded",
    "Package",
    "PackageConfig",
    "PackageError",
    "PayloadTooLarge",
    "PredictTimeout",
    "RequestContext",
    "Runner",
    "StoreError",
    "Video",
    "__version__",
    "build_app",
    "endpoint",
    "inspect_model",
    "load_config",
    "load_package",
    "parse_config",
]
