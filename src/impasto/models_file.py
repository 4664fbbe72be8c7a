"""``models.yaml``: several packages behind one server, with names, per-model overrides,
a default, lazy loading and a bound on the models loaded at once.

::

    max_loaded: 1            # at most this many models in memory (LRU eviction of idle ones)
    auth:                    # API keys (the keys come from the secret `api_keys`)
      open_routes: ["/", "/health/*", "/metrics"]
    results: {ttl_s: 600}    # OpenAI `response_format=url` results
    jobs: {max_queued: 100}  # durable async jobs (default: the default model's `jobs:`)
    models:
      - name: sd             # the name clients use (default: the package's model_name)
        path: ../examples/tiny-sd   # relative to this file
        default: true        # what /predict, /predictions... serve (default: the first)
      - name: echo
        path: ./echo
        lazy: true           # loaded on its first request
        overrides:           # merged over the package's config.yaml
          runtime: {max_queue: 4}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .config import AuthConfig, JobsConfig, SageMakerConfig
from .errors import ConfigError
from .package import Package, load_package
from .secrets import Redactor
from .server.results import ResultsConfig


class ModelEntry(BaseModel):
    """One package served under a name."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., description="The package folder (relative to models.yaml).")
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$",
        description="The name requests use (default: the package's model_name).",
    )
    default: bool = Field(False, description="Serve it on the routes that name no model.")
    lazy: bool = Field(False, description="Load it on its first request instead of at start.")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="config.yaml keys merged over the package's own."
    )


class ModelsFile(BaseModel):
    """The whole models.yaml."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelEntry] = Field(..., min_length=1)
    max_loaded: int | None = Field(
        None, ge=1, description="Models loaded at once; the least recently used idle one goes."
    )
    auth: AuthConfig | None = Field(None, description="API keys (default: the default model's).")
    results: ResultsConfig = Field(default_factory=ResultsConfig)
    jobs: JobsConfig | None = Field(None, description="Async jobs (default: the default model's).")
    sagemaker: SageMakerConfig | None = Field(
        None, description="SageMaker async invocations (default: the default model's)."
    )

    @model_validator(mode="after")
    def _one_default(self) -> ModelsFile:
        defaults = [m.name or m.path for m in self.models if m.default]
        if len(defaults) > 1:
            raise ValueError(f"only one model can be `default: true` (got {', '.join(defaults)})")
        return self


@dataclass(frozen=True)
class ServePlan:
    """What one server serves: its packages (by name), the default, which load lazily, how
    many may be loaded at once, its API key settings and its result URLs."""

    packages: list[Package]
    default: str | None = None
    lazy: frozenset[str] = frozenset()
    max_loaded: int | None = None
    auth: AuthConfig | None = None
    results: ResultsConfig = field(default_factory=ResultsConfig)
    jobs: JobsConfig | None = None
    sagemaker: SageMakerConfig | None = None

    def __post_init__(self) -> None:
        names = [p.name for p in self.packages]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(
                f"two models are named {', '.join(twice)}; give each its own `name` in "
                "models.yaml (or model_name in its config.yaml)"
            )

    @property
    def default_package(self) -> Package:
        return next((p for p in self.packages if p.name == self.default), self.packages[0])

    @property
    def auth_config(self) -> AuthConfig:
        """The plan's auth section, else the default model's."""
        return self.auth if self.auth is not None else self.default_package.config.auth

    @property
    def jobs_config(self) -> JobsConfig:
        """The plan's jobs section, else the default model's."""
        return self.jobs if self.jobs is not None else self.default_package.config.jobs

    @property
    def sagemaker_config(self) -> SageMakerConfig:
        """The plan's sagemaker section, else the default model's."""
        if self.sagemaker is not None:
            return self.sagemaker
        return self.default_package.config.sagemaker

    def api_keys(self) -> list[str]:
        """The keys clients must send (none: auth is off)."""
        from .server.auth import api_key_values

        return api_key_values(self.auth_config, self.default_package.config.secrets_dir)

    def redactor(self) -> Redactor:
        """Every package's secrets and the API keys, scrubbed from logs."""
        values = {f"{p.name}.{k}": v for p in self.packages for k, v in p.secrets.items()}
        values.update({f"api_key_{i}": key for i, key in enumerate(self.api_keys())})
        return Redactor(values)


def plan_for(packages: list[Package]) -> ServePlan:
    """Packages given on the command line: all load at start, the first is the default."""
    return ServePlan(packages)


def model_paths(path: str | Path | None) -> list[Path]:
    """The package folders a models.yaml names, without loading them."""
    assert path is not None
    where, parsed = _read(path)
    return [where.parent / entry.path for entry in parsed.models]


def load_models_file(path: str | Path) -> ServePlan:
    """Read models.yaml and load each package it names (their models load later)."""
    path, parsed = _read(path)
    packages = []
    for entry in parsed.models:
        overrides = dict(entry.overrides)
        if entry.name:
            overrides["model_name"] = entry.name
        packages.append(load_package(path.parent / entry.path, overrides=overrides))
    default = next(
        (pkg.name for pkg, e in zip(packages, parsed.models, strict=True) if e.default),
        packages[0].name,
    )
    lazy = frozenset(pkg.name for pkg, e in zip(packages, parsed.models, strict=True) if e.lazy)
    return ServePlan(
        packages,
        default=default,
        lazy=lazy,
        max_loaded=parsed.max_loaded,
        auth=parsed.auth,
        results=parsed.results,
        jobs=parsed.jobs,
        sagemaker=parsed.sagemaker,
    )


def _read(path: str | Path) -> tuple[Path, ModelsFile]:
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"{path} not found; pass a models.yaml listing `models:`")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        parsed = ModelsFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: invalid `{key}`: {err['msg']}", field=key) from None
    return path, parsed
