"""The frozen build spec: what every artifact of ``impasto build`` is rendered from.

:func:`build_spec` reads a package folder once (its config and file names; user code is never
imported, so a package whose dependencies the build host lacks still builds) and the model
store (which store versions to export). Everything after it is pure: the renderers in
:mod:`.dockerfile`, :mod:`.k8s` and :mod:`.sagemaker` take a :class:`BuildSpec` and return text.
"""

from __future__ import annotations

import ast
import logging
import math
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..config import PackageConfig, load_config
from ..errors import ConfigError, NotFound, StoreError
from ..formats import detect_format
from ..requirements import requirements_file
from ..secrets import DEFAULT_SECRETS_DIR

log = logging.getLogger("impasto.build")

DEFAULT_PYTHON = "3.11"
CPU_BASE = "python:{python}-slim-bookworm"
GPU_BASES = {  # CUDA runtime images whose distribution ships that Python
    "3.10": "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04",
    "3.12": "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04",
}
DEFAULT_GPU_PYTHON = "3.12"

APP_DIR = "/app"
SAGEMAKER_DIR = "/opt/ml/model"
HOME_DIR = "/var/lib/impasto"
VENV = "/opt/venv"
PORT = 8080
UID = 10001
DEFAULT_STARTUP_S = 600.0
"""How long orchestrators wait for ``load()`` when ``runtime.load_timeout_s`` is not set."""

KINDS = {
    "diffusers": "diffusers package",
    "custom": "custom model package",
    "truss": "Truss package",
    "sagemaker": "SageMaker model folder",
    "octoai": "OctoAI-style service",
}

_APT = re.compile(r"^[a-z0-9][a-z0-9+.-]*(=[A-Za-z0-9.+:~-]+)?$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class BuildOptions:
    """What the command line says on top of the package's own config."""

    bake: bool = True
    setup: bool | None = None  # load once at build; None: unless the package needs a GPU
    base_image: str | None = None
    tag: str | None = None
    wheelhouse: bool = False
    ui: bool = False


@dataclass(frozen=True)
class StoredWeights:
    """A model store version exported into the build context."""

    name: str
    version: str
    source: Path = field(compare=False)  # its folder in the build host's store

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class ExternalDir:
    """An ``external_package_dirs`` entry outside the package folder: copied into the
    context as ``external/<slot>/`` and into the image where the entry points from the
    package folder (``../shared_lib`` from /app: /shared_lib), so config.yaml holds as is."""

    entry: str
    slot: str
    image_path: str
    source: Path = field(compare=False)


@dataclass(frozen=True)
class BuildSpec:
    """Everything the renderers need, as plain frozen data."""

    name: str
    kind: str  # a key of KINDS
    image: str  # the tag, e.g. impasto/tiny-sd:latest
    impasto_version: str
    impasto_wheel: str  # file name of impasto's wheel in the context's wheels/
    extras: tuple[str, ...]
    base_image: str
    python_version: str
    python_from_apt: bool  # the base has no Python: install Debian/Ubuntu's
    gpu: bool
    gpu_count: int
    accelerator: str | None
    cpu: str | None
    memory: str | None
    apt_packages: tuple[str, ...]
    requirements_files: tuple[str, ...]  # names under the context's requirements/
    build_commands: tuple[str, ...]
    package_dir: str
    root_user: bool  # SageMaker images run as root
    environment: tuple[tuple[str, str], ...]
    stored: tuple[StoredWeights, ...]
    downloads: tuple[str, ...]  # what `impasto setup --download-only` fetches (hub ids)
    bake: bool
    setup: bool
    wheelhouse: bool
    ui: bool
    cpu_torch: bool  # a CPU image of a torch package: pip also reads PyTorch's CPU index
    shutdown_grace_s: float
    startup_s: float
    secrets: tuple[str, ...]
    secrets_dir: str
    description: str | None = None
    port: int = PORT
    external: tuple[ExternalDir, ...] = ()  # external_package_dirs outside the package
    python: str = "python3"  # the base image's interpreter (base_image.python_executable_path)
    data_downloads: bool = False  # external_data: the download step writes into the package

    @property
    def label(self) -> str:
        return KINDS[self.kind]

    @property
    def termination_grace_s(self) -> int:
        """The server's shutdown grace plus 10 s to cancel what is left and exit."""
        return math.ceil(self.shutdown_grace_s) + 10

    @property
    def download_step(self) -> bool:
        """Whether a build step (or, unbaked, the start) runs ``setup --download-only``."""
        return bool(self.downloads)


def python_version(config: PackageConfig, gpu: bool) -> str:
    """``python_version`` (``py311`` or ``3.11``) as ``3.11``."""
    value = config.python_version
    if not value:
        return DEFAULT_GPU_PYTHON if gpu else DEFAULT_PYTHON
    return value if "." in value else f"{value[2]}.{value[3:]}"


def gpu_count(config: PackageConfig) -> int:
    """GPUs per replica: the count in ``accelerator`` (``H100:2``), 1 with ``use_gpu``."""
    acc = config.resources.accelerator
    if acc and ":" in acc:
        count = acc.rsplit(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise ConfigError(
                f"resources.accelerator {acc!r}: write KIND or KIND:COUNT, e.g. H100:2",
                field="resources.accelerator",
            )
        return int(count)
    return 1 if (acc or config.resources.use_gpu) else 0


def image_name(name: str) -> str:
    """A model name as a repository path component (lowercase, ``[a-z0-9._-]``)."""
    word = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    return word or "model"


def package_kind(root: Path, config: PackageConfig) -> str:
    """Which kind of package ``root`` is, from file names, config and the model module's
    syntax alone: ``sagemaker``, ``octoai``, ``diffusers`` (a ``diffusers:`` section, with
    or without a model.py), ``truss`` (a model class written for Truss) or ``custom``."""
    fmt = detect_format(root)
    if fmt is not None:
        return fmt.name
    if config.diffusers is not None:
        return "diffusers"
    return "truss" if truss_shaped(root, config) else "custom"


def truss_shaped(root: Path, config: PackageConfig) -> bool:
    """Whether the model class is written for Truss: it has its own ``predict`` (or
    ``websocket``) and its module never imports impasto. Parsed, never imported."""
    model_py = root / config.model_module_dir / config.model_class_filename
    try:
        tree = ast.parse(model_py.read_text(encoding="utf-8"), str(model_py))
    except (OSError, SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        if any(name == "impasto" or name.startswith("impasto.") for name in names):
            return False
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == config.model_class_name:
            methods = {
                item.name
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            return bool(methods & {"predict", "websocket"})
    return False


def uses_diffusers(root: Path, config: PackageConfig, kind: str) -> bool:
    if kind in ("diffusers", "sagemaker"):
        return True
    model_py = root / config.model_module_dir / config.model_class_filename
    try:
        return "impasto.diffusers" in model_py.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def requirement_lines(config: PackageConfig) -> str:
    """config.yaml's ``requirements``, one a line."""
    return "".join(f"{line}\n" for line in config.requirements)


def _uses_torch(config: PackageConfig, extras: list[str]) -> bool:
    names = [
        re.split(r"[\s<>=!~\[;@]", r.strip(), maxsplit=1)[0].lower() for r in config.requirements
    ]
    return "diffusers" in extras or "torch" in names


def external_dirs(root: Path, config: PackageConfig, package_dir: str) -> list[ExternalDir]:
    """The ``external_package_dirs`` entries outside ``root`` (those inside it are package
    files already), checked to exist."""
    found = []
    for number, entry in enumerate(config.external_package_dirs):
        folder = (root / entry).resolve()
        if not folder.is_dir():
            raise ConfigError(
                f"external_package_dirs: {entry!r} resolves to {folder}, which is not a folder",
                field="external_package_dirs",
            )
        if folder.is_relative_to(root):
            continue
        target = posixpath.normpath(posixpath.join(package_dir, entry))
        if target == "/" or target.split("/")[1] in _SYSTEM_DIRS:
            raise ConfigError(
                f"external_package_dirs: {entry!r} lands on {target} in the image, a system "
                "folder; keep shared code beside the package (e.g. ../shared_lib)",
                field="external_package_dirs",
            )
        slot = f"{number}-{image_name(folder.name)}"
        found.append(ExternalDir(entry, slot, target, folder))
    return found


_SYSTEM_DIRS = {"bin", "boot", "dev", "etc", "lib", "lib64", "proc", "sbin", "sys", "usr"}


def read_config(root: Path) -> PackageConfig:
    fmt = detect_format(root)
    return fmt.config(root) if fmt else load_config(root / "config.yaml")


def weight_refs(config: PackageConfig, store: object) -> tuple[list[StoredWeights], list[str]]:
    """The store versions a package names (exported into the context) and the hub ids it
    names (downloaded by a build step): ``diffusers.model``, ``model_cache`` entries and a
    SageMaker folder's ``HF_MODEL_ID``. A store ref the build host's store lacks is left to
    the package's own ``load()`` (as the tiny examples build their weights)."""
    from ..sagemaker.folder import hub_store_ref
    from ..store import ModelStore

    assert isinstance(store, ModelStore)
    stored: list[StoredWeights] = []
    hub: list[str] = []

    def export(ref: str) -> bool:
        try:
            found = store.resolve(ref)
        except NotFound:
            return False
        item = StoredWeights(found.ref.name, found.ref.version, found.path)
        if item not in stored:
            stored.append(item)
        return True

    model = config.diffusers.model if config.diffusers is not None else None
    if model and model.startswith(("/", "~")):
        log.warning(
            "diffusers.model %s is a folder outside the package: builds do not copy it; "
            "import it into the model store (`impasto models import NAME %s`) and name it "
            "by its ref, or move it into the package as ./folder",
            model,
            model,
        )
    elif model and not model.startswith("."):
        if ":" in model and store.is_ref(model):
            if not export(model):
                log.warning(
                    "diffusers.model %s is not in this machine's model store (%s): the "
                    "image gets it only if the package's load() makes it",
                    model,
                    store.models_dir,
                )
        elif store.is_ref(model):
            export(model)
        elif _HUB_ID.match(model):
            hub.append(model)
    hub.extend(entry.repo_id for entry in config.model_cache)
    hf_model = config.environment_variables.get("HF_MODEL_ID")
    if hf_model:
        revision = config.environment_variables.get("HF_MODEL_REVISION") or None
        if not export(hub_store_ref(hf_model, revision)):
            hub.append(hf_model)
    return stored, list(dict.fromkeys(hub))


def build_spec(
    root: Path | str, options: BuildOptions | None = None, *, store: object = None
) -> BuildSpec:
    """Read the package in ``root`` and the model store into a :class:`BuildSpec`."""
    from ..store import ModelStore

    options = options or BuildOptions()
    root = Path(root).resolve()
    if not root.is_dir():
        raise NotFound(f"{root} is not a folder; pass the package folder")
    config = read_config(root)
    kind = package_kind(root, config)
    name = config.model_name or root.name
    count = gpu_count(config)
    gpu = count > 0
    python = python_version(config, gpu)
    base = options.base_image or _configured_base(config)
    from_apt = False
    if base is None:
        if gpu:
            if python not in GPU_BASES:
                known = ", ".join(sorted(GPU_BASES))
                raise ConfigError(
                    f"python_version {python}: the CUDA base images impasto knows ship Python "
                    f"{known}; pick one of those or pass --base-image",
                    field="python_version",
                )
            base, from_apt = GPU_BASES[python], True
        else:
            base = CPU_BASE.format(python=python)
    for pkg in config.system_packages:
        if not _APT.match(pkg):
            raise ConfigError(
                f"system_packages: {pkg!r} is not a Debian package name", field="system_packages"
            )
    env = []
    for key, value in config.environment_variables.items():
        if not _ENV_KEY.match(key) or "\n" in value:
            raise ConfigError(
                f"environment_variables.{key}: names are letters, digits and _; values one line",
                field=f"environment_variables.{key}",
            )
        env.append((key, value))
    try:
        stored, hub = weight_refs(config, store or ModelStore())
    except StoreError as exc:
        raise StoreError(f"cannot export the package's weights: {exc.message}") from None
    extras = ["diffusers"] if uses_diffusers(root, config, kind) else []
    if options.ui:
        extras.append("ui")
    files = ["impasto.txt"]  # impasto's own dependencies, from its wheel
    if config.requirements:
        files.append("config.txt")
    if requirements_file(root) is not None:
        files.append("package.txt")
    runtime = config.runtime
    startup = (runtime.load_timeout_s + 60) if runtime.load_timeout_s else DEFAULT_STARTUP_S
    setup = options.setup if options.setup is not None else not gpu
    version = str(config.model_metadata.get("version") or "latest")
    package_dir = SAGEMAKER_DIR if kind == "sagemaker" else APP_DIR
    external = external_dirs(root, config, package_dir)
    return BuildSpec(
        name=name,
        kind=kind,
        image=options.tag or f"impasto/{image_name(name)}:{image_name(version)}",
        impasto_version=__version__,
        impasto_wheel=f"impasto-{__version__}-py3-none-any.whl",
        extras=tuple(extras),
        base_image=base,
        python_version=python,
        python_from_apt=from_apt,
        gpu=gpu,
        gpu_count=count,
        accelerator=config.resources.accelerator,
        cpu=config.resources.cpu,
        memory=config.resources.memory,
        apt_packages=tuple(config.system_packages),
        requirements_files=tuple(files),
        build_commands=tuple(config.build_commands),
        package_dir=package_dir,
        root_user=kind == "sagemaker",
        environment=tuple(env),
        stored=tuple(stored) if options.bake else (),
        downloads=tuple([*hub, *(item.url for item in config.external_data)]),
        bake=options.bake,
        setup=options.bake and setup,
        wheelhouse=options.wheelhouse,
        ui=options.ui,
        cpu_torch=not gpu and _uses_torch(config, extras),
        shutdown_grace_s=runtime.shutdown_grace_s,
        startup_s=startup,
        secrets=tuple(config.secrets),
        secrets_dir=config.secrets_dir or DEFAULT_SECRETS_DIR,
        description=config.description,
        external=tuple(external),
        data_downloads=bool(config.external_data),
        python=_configured_python(config) if not options.base_image else "python3",
    )


def _configured_base(config: PackageConfig) -> str | None:
    base = config.base_image or {}
    image = base.get("image") if isinstance(base, dict) else None
    return str(image) if image else None


def _configured_python(config: PackageConfig) -> str:
    """``base_image.python_executable_path`` (Truss's key for a base image whose Python is
    not ``python3`` on the PATH), checked to be an absolute path."""
    base = config.base_image or {}
    path = base.get("python_executable_path") if isinstance(base, dict) else None
    if not path:
        return "python3"
    if not re.fullmatch(r"/[\w./+-]+", str(path)):
        raise ConfigError(
            f"base_image.python_executable_path: {path!r} is not an absolute path",
            field="base_image.python_executable_path",
        )
    return str(path)
