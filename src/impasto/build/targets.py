"""The three things ``impasto build`` makes, each from a package folder in one call.

- :func:`container_context`: an OCI/Docker build context (and, with an engine, the image);
- :func:`sagemaker_archive`: a ``model.tar.gz`` in the inference toolkit's layout;
- :func:`k8s_manifests`: Kubernetes (and KServe) objects for the image.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BuildError, NotFound
from . import shell
from .context import write_context
from .k8s import K8sOptions, dump, render_k8s
from .sagemaker import write_archive
from .spec import BuildOptions, BuildSpec, build_spec, read_config

log = logging.getLogger("impasto.build")


@dataclass(frozen=True)
class ImageResult:
    spec: BuildSpec
    context: Path
    command: list[str]
    built: bool = False
    pushed: bool = False
    notes: list[str] = field(default_factory=list)


def _wheelhouse(wheelhouse: Path | None) -> list[Path]:
    """Every wheel of the wheelhouse but impasto's own."""
    if wheelhouse is None:
        return []
    if not wheelhouse.is_dir():
        raise BuildError(f"--wheelhouse {wheelhouse} is not a folder")
    return sorted(p for p in wheelhouse.glob("*.whl") if not p.name.startswith("impasto-"))


def container_context(
    path: Path,
    out: Path,
    options: BuildOptions,
    *,
    wheelhouse: Path | None = None,
    engine: str | None = None,
    push: bool = False,
) -> ImageResult:
    """Write the build context into ``out``; build (and push) the image when ``engine`` is
    given and installed."""
    spec = build_spec(path, options)
    with tempfile.TemporaryDirectory(prefix="impasto-build-") as tmp:
        own = shell.impasto_wheel(Path(tmp), wheelhouse)
        write_context(spec, Path(path), out, own, _wheelhouse(wheelhouse))
    command = shell.build_command(engine or "podman", out, spec.image)
    if engine is None:
        return ImageResult(spec, out, command)
    if shell.engine_path(engine) is None:
        return ImageResult(spec, out, command, notes=[f"{engine} is not installed here"])
    shell.run(command, what=f"building {spec.image}", capture=False)
    if push:
        shell.run(shell.push_command(engine, spec.image), what="pushing", capture=False)
    return ImageResult(spec, out, command, built=True, pushed=push)


def pipeline_folder(spec: BuildSpec, path: Path) -> Path | None:
    """The diffusers pipeline a SageMaker archive puts at its root: the store version (or
    the hub download, imported into the store) ``diffusers.model`` names."""
    config = read_config(Path(path).resolve())
    if config.diffusers is None or spec.kind == "sagemaker" or not spec.bake:
        return None
    for item in spec.stored:
        if config.diffusers.model in (item.ref, item.name, f"{item.name}:latest"):
            return item.source
    if config.diffusers.model in spec.downloads:
        from ..sagemaker.folder import hub_store_ref
        from ..store import ModelStore

        store = ModelStore()
        ref = hub_store_ref(config.diffusers.model, None)
        try:
            return store.resolve(ref).path
        except NotFound:
            cfg = config.diffusers
            stored = store.import_hub(
                ref, cfg.model, variant=cfg.variant, allow_pickle=cfg.allow_pickle
            )
            return stored.path
    return None


def sagemaker_archive(
    path: Path, out: Path, options: BuildOptions, *, wheelhouse: Path | None = None
) -> tuple[BuildSpec, Path]:
    if not Path(out).name.endswith((".tar.gz", ".tgz")):
        raise BuildError(f"--out {out}: a SageMaker archive is a .tar.gz file")
    spec = build_spec(path, options)
    with tempfile.TemporaryDirectory(prefix="impasto-build-") as tmp:
        wheel = shell.impasto_wheel(Path(tmp), wheelhouse)
        archive = write_archive(spec, Path(path), out, wheel, pipeline_folder(spec, path))
    return spec, archive


def k8s_manifests(
    path: Path, out: Path, options: BuildOptions, k8s: K8sOptions
) -> tuple[BuildSpec, list[Path]]:
    spec = build_spec(path, options)
    written = []
    for name, objects in render_k8s(spec, k8s).items():
        file = Path(out) / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(dump(objects))
        written.append(file)
    return spec, written
