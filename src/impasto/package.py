"""Load a package folder: read config.yaml, find the model class, build its spec.

A package is ``config.yaml`` + ``model/model.py`` (+ ``data/``, ``packages/``,
``examples.yaml``). A package whose config has a ``diffusers:`` section needs no model.py.
Folders made for other systems (a SageMaker model folder, an OctoAI-style service) load
through :mod:`impasto.formats` into the same kind of package.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import PackageConfig, deep_merge, load_config, parse_config
from .environment import Environment
from .errors import ConfigError, NotFound, PackageError
from .formats import detect_format
from .secrets import Redactor, Secrets, resolve_secrets
from .spec import ModelSpec, inspect_model

log = logging.getLogger("impasto.package")


@dataclass(frozen=True)
class Example:
    name: str
    input: Any


@dataclass(frozen=True)
class Package:
    """A loaded package: config, model spec and how to build the model object."""

    root: Path
    config: PackageConfig
    spec: ModelSpec
    secrets: Secrets = field(repr=False)
    environment: str | None
    redactor: Redactor = field(repr=False)

    @property
    def name(self) -> str:
        return self.config.model_name or self.root.name

    @property
    def kind(self) -> str:
        """Which protocol's dialect shared routes answer in: the kind a model class declares
        (``impasto_kind``: ``sagemaker``, ``octoai``), ``truss`` for a model class with its
        own ``predict`` or ``websocket`` (the Truss-shaped package), ``impasto`` for the rest
        (zero-code diffusers, ``@impasto.endpoint`` classes)."""
        from .diffusers.model import DiffusersModel

        cls = self.spec.cls
        declared = getattr(cls, "impasto_kind", None)
        if isinstance(declared, str):
            return declared
        if issubclass(cls, DiffusersModel):
            return "impasto"
        if callable(getattr(cls, "predict", None)) or "websocket" in self.spec.hooks:
            return "truss"
        return "impasto"

    @property
    def data_dir(self) -> Path:
        return (self.root / self.config.data_dir).resolve()

    def factory(self) -> Callable[[], Any]:
        """A callable that builds the model object, passing only the arguments it asks for."""
        available = {
            "config": self.config.model_dump(mode="python"),
            "data_dir": self.data_dir,
            "secrets": self.secrets,
            "environment": Environment(self.environment) if self.environment else None,
        }
        spec = self.spec
        kwargs = available if spec.init_kwargs else {k: available[k] for k in spec.init_args}
        return lambda: spec.cls(**kwargs)

    def before_load(self, model: Any) -> Any:
        """Run the model's ``setup_environment(environment)`` (when it has one and an
        environment is set) on the built model, before ``load()``; an async one returns
        its awaitable for the runner to await."""
        if not self.environment or "setup_environment" not in self.spec.hooks:
            return None
        log.info("%s: setup_environment(%r)", self.name, self.environment)
        return model.setup_environment(Environment(self.environment))

    def scope(self) -> contextlib.AbstractContextManager[None]:
        """The package's ``environment_variables`` and import folders (``packages/``,
        ``external_package_dirs``): in effect while it is imported, and while a runner serves
        it (from load to close), undone afterwards; plus whatever the model class needs in
        scope (``impasto_scope``: the OctoAI SDK modules of an OctoAI-style service)."""
        return package_scope(self.root, self.config, getattr(self.spec.cls, "impasto_scope", None))

    def examples(self) -> list[Example]:
        return load_examples(self.root / self.config.examples_filename)

    def example(self, name: str) -> Example:
        for ex in self.examples():
            if ex.name == name:
                return ex
        names = ", ".join(e.name for e in self.examples()) or "none"
        raise NotFound(f"no example named {name!r} in {self.config.examples_filename} ({names})")


def load_examples(path: Path) -> list[Example]:
    """Read ``examples.yaml``: a list of ``{name, input}``."""
    if not path.exists():
        return []
    try:
        data = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(d, dict) and "name" in d for d in data):
        raise ConfigError(f"{path}: must be a list of {{name, input}} entries")
    return [Example(str(d["name"]), d.get("input")) for d in data]


def load_package(
    path: str | Path,
    *,
    environment: str | None = None,
    secrets_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Package:
    """Read a package folder and inspect its model class (does not build or load the model);
    ``overrides`` are merged over its config.yaml (a models.yaml entry's name and settings)."""
    root = Path(path).resolve()
    if not root.is_dir():
        raise PackageError(f"{root} is not a folder; pass the package folder (with config.yaml)")
    fmt = detect_format(root)
    config = fmt.config(root) if fmt else load_config(root / "config.yaml", overrides)
    if fmt and overrides:
        config = parse_config(deep_merge(config.model_dump(mode="python"), overrides))
    config = rooted_paths(root, config)
    with package_scope(root, config):
        cls = fmt.model_class(root, config) if fmt else _model_class(root, config)
        spec = inspect_model(cls, config.endpoints)
    secrets = resolve_secrets(config.secrets, secrets_dir or config.secrets_dir)
    env = environment or os.environ.get("IMPASTO_ENVIRONMENT") or None
    return Package(root, config, spec, secrets, env, Redactor(secrets))


def rooted_paths(root: Path, config: PackageConfig) -> PackageConfig:
    """``diffusers.model: ./weights`` (``.``, ``./x``, ``../x``) names a folder relative to
    the package, wherever the server runs from (a SageMaker archive's pipeline sits beside
    its config.yaml, as ``.``)."""
    cfg = config.diffusers
    if cfg is None or not (cfg.model == "." or cfg.model.startswith(("./", "../"))):
        return config
    folder = str((root / cfg.model).resolve())
    return config.model_copy(update={"diffusers": cfg.model_copy(update={"model": folder})})


@contextlib.contextmanager
def package_scope(
    root: Path,
    config: PackageConfig,
    extra: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> Iterator[None]:
    """Set the package's environment variables (those not already set) and put
    ``packages/`` and every ``external_package_dirs`` entry on ``sys.path`` for the block
    (and enter ``extra()``), then put back exactly what it changed."""
    dirs = [root / config.bundled_packages_dir]
    for entry in config.external_package_dirs:
        folder = (root / entry).resolve()
        if not folder.is_dir():
            raise ConfigError(
                f"external_package_dirs: {entry!r} resolves to {folder}, which is not a folder",
                field="external_package_dirs",
            )
        dirs.append(folder)
    added_dirs = [str(f) for f in dirs if f.is_dir() and str(f) not in sys.path]
    added_env = {}
    for key, value in config.environment_variables.items():
        if key not in os.environ:
            added_env[key] = value
        elif os.environ[key] != value:
            log.warning(
                "%s: environment_variables.%s is already set in this process; keeping the "
                "value already there",
                root.name,
                key,
            )
    sys.path[:0] = added_dirs
    os.environ.update(added_env)
    try:
        with extra() if extra is not None else contextlib.nullcontext():
            yield
    finally:
        for folder in added_dirs:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)
        for key, value in added_env.items():
            if os.environ.get(key) == value:
                del os.environ[key]


def _model_class(root: Path, config: PackageConfig) -> type:
    module_dir = root / config.model_module_dir
    model_file = module_dir / config.model_class_filename
    if not model_file.exists():
        if config.diffusers is not None:
            from .diffusers.model import model_class_for

            return model_class_for(config)
        raise PackageError(
            f"{model_file} not found; a package needs {config.model_module_dir}/"
            f"{config.model_class_filename} with a `{config.model_class_name}` class "
            "(or a `diffusers:` section in config.yaml); run `impasto init NAME` for a template"
        )
    module = _import_model_module(module_dir, model_file)
    cls = getattr(module, config.model_class_name, None)
    if cls is None:
        raise PackageError(
            f"{model_file} has no class `{config.model_class_name}` "
            "(set model_class_name in config.yaml if it is named differently)"
        )
    if config.diffusers is not None:
        from .diffusers.model import DiffusersModel, model_class_for

        if isinstance(cls, type) and issubclass(cls, DiffusersModel):
            return model_class_for(config, base=cls)
    return cls


def _import_model_module(module_dir: Path, model_file: Path) -> Any:
    """Import model.py as a submodule of a uniquely named package, so relative imports
    work and two packages in one process never collide."""
    digest = hashlib.sha1(str(module_dir).encode()).hexdigest()[:12]
    pkg_name = f"impasto_pkg_{digest}"
    init = module_dir / "__init__.py"
    if pkg_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            pkg_name,
            init if init.exists() else None,
            submodule_search_locations=[str(module_dir)],
        )
        if spec is None or spec.loader is None:  # a folder without __init__.py
            spec = importlib.machinery.ModuleSpec(pkg_name, None, is_package=True)
            spec.submodule_search_locations = [str(module_dir)]
        pkg = importlib.util.module_from_spec(spec)
        sys.modules[pkg_name] = pkg
        if spec.loader is not None:
            spec.loader.exec_module(pkg)
    name = f"{pkg_name}.{model_file.stem}"
    sys.modules.pop(name, None)  # re-import on reload
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise PackageError(f"importing {model_file} failed: {type(exc).__name__}: {exc}") from exc
