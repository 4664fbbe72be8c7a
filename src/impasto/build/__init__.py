"""``impasto build``: container images, SageMaker archives and Kubernetes manifests.

:mod:`.spec` reads a package into a frozen :class:`BuildSpec`; :mod:`.dockerfile`,
:mod:`.sagemaker` and :mod:`.k8s` render from it (pure, golden-tested); :mod:`.context`
and :func:`.sagemaker.write_archive` copy files; :mod:`.shell` is the one module that runs
programs (pip for impasto's wheel, podman or docker); :mod:`.targets` puts them together.
"""

from .dockerfile import render_dockerfile, render_entrypoint
from .k8s import K8sOptions, render_k8s
from .sagemaker import render_requirements, render_shim
from .spec import BuildOptions, BuildSpec, StoredWeights, build_spec

__all__ = [
    "BuildOptions",
    "BuildSpec",
    "K8sOptions",
    "StoredWeights",
    "build_spec",
    "render_dockerfile",
    "render_entrypoint",
    "render_k8s",
    "render_requirements",
    "render_shim",
]
