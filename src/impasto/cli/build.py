"""``impasto build PATH --out OUT``: an image build context, a SageMaker archive or
Kubernetes manifests for a package."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from ..build import BuildOptions, K8sOptions
from ..build.shell import quote
from ..errors import BuildError
from .output import configure_logging, handle_errors


def echo(text: str) -> None:
    """Plain lines: commands stay whole for copying (no wrapping, no markup)."""
    typer.echo(text)


class Format(str, Enum):
    docker = "docker"
    sagemaker = "sagemaker"
    k8s = "k8s"


class Engine(str, Enum):
    podman = "podman"
    docker = "docker"


@handle_errors
def build(
    path: Path = typer.Argument(..., help="The package folder."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Where to write: a folder (docker, k8s) or model.tar.gz."
    ),
    format: Format = typer.Option(Format.docker, "--format", help="docker, sagemaker or k8s."),
    bake: bool = typer.Option(
        True, "--bake/--no-bake", help="Put the weights in the artifact (else fetched at start)."
    ),
    setup: bool | None = typer.Option(
        None,
        "--setup/--no-setup",
        help="Load the model once during the image build (default: unless it needs a GPU).",
    ),
    wheelhouse: Path | None = typer.Option(
        None, "--wheelhouse", help="Install from these wheels only, with no package index."
    ),
    engine: Engine | None = typer.Option(
        None, "--engine", help="Build the image with podman or docker once the context is written."
    ),
    tag: str | None = typer.Option(
        None, "--tag", "-t", help="Image tag (default impasto/<model_name>:<version>)."
    ),
    push: bool = typer.Option(False, "--push", help="Push the image after building it."),
    base_image: str | None = typer.Option(None, "--base-image", help="Override the base image."),
    ui: bool = typer.Option(
        False, "--ui", help="Include the playground (impasto[ui]) and serve it."
    ),
    upload: str | None = typer.Option(
        None, "--upload", help="sagemaker: upload the archive to s3://BUCKET/KEY."
    ),
    kserve: bool = typer.Option(False, "--kserve", help="k8s: also a KServe InferenceService."),
    hpa: bool = typer.Option(False, "--hpa", help="k8s: an autoscaler on queue depth."),
    replicas: int = typer.Option(1, "--replicas", min=1, help="k8s: replicas (HPA minimum)."),
    max_replicas: int = typer.Option(4, "--max-replicas", min=1, help="k8s: HPA maximum."),
    queue_target: int = typer.Option(
        4, "--queue-target", min=1, help="k8s: waiting predictions per pod the HPA aims for."
    ),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="k8s: namespace."),
    log_level: str = typer.Option("info", envvar="IMPASTO_LOG_LEVEL"),
) -> None:
    """Build a package into a container context (and image), a SageMaker archive, or
    Kubernetes manifests.

    Example: impasto build examples/tiny-sd --out build/tiny-sd --engine podman
    """
    from ..build import targets

    configure_logging(log_level)
    options = BuildOptions(
        bake=bake,
        setup=setup,
        base_image=base_image,
        tag=tag,
        wheelhouse=wheelhouse is not None,
        ui=ui,
    )
    if upload and format is not Format.sagemaker:
        raise BuildError("--upload is for --format sagemaker")
    if (engine or push) and format is not Format.docker:
        raise BuildError("--engine and --push are for container builds (--format docker)")
    if push and engine is None:
        raise BuildError("--push needs --engine podman or --engine docker")
    if format is Format.sagemaker:
        spec, archive = targets.sagemaker_archive(path, out, options, wheelhouse=wheelhouse)
        size = archive.stat().st_size / 1e6
        echo(f"{spec.name}: SageMaker archive {archive} ({size:.1f} MB)")
        if upload:
            from ..build.upload import upload as send

            url = send(archive, upload)
            echo(f"ModelDataUrl: {url}")
        return
    if format is Format.k8s:
        k8s = K8sOptions(namespace, replicas, hpa, max_replicas, queue_target, kserve)
        spec, files = targets.k8s_manifests(path, out, options, k8s)
        for file in files:
            echo(f"wrote {file}")
        echo(f"apply with: kubectl apply -f {out}  (image {spec.image})")
        return
    result = targets.container_context(
        path,
        out,
        options,
        wheelhouse=wheelhouse,
        engine=engine.value if engine else None,
        push=push,
    )
    echo(f"{result.spec.name}: build context in {result.context}")
    for note in result.notes:
        echo(note)
    if result.built:
        echo(f"built {result.spec.image}" + (" and pushed it" if result.pushed else ""))
    else:
        echo(f"build it with: {quote(result.command)}")
    grace = result.spec.termination_grace_s
    echo(f"run it with: podman run --rm -p 8080:8080 --stop-timeout {grace} {result.spec.image}")
