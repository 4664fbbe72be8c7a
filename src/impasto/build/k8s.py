"""Kubernetes objects for a package's image: a Deployment, a Service, an optional
HorizontalPodAutoscaler on queue depth, and a KServe ``InferenceService``.

Pure functions of the :class:`BuildSpec` (golden-tested and checked against the Kubernetes
schemas). What they encode about impasto's server:

- it listens on 8080; ``/health/live`` answers as soon as the process runs (while the model
  loads), ``/health/ready`` once ``load()`` is done: liveness on the first, readiness on the
  second, and a startup probe on readiness that allows ``runtime.load_timeout_s`` (+60 s)
  or 10 minutes;
- on SIGTERM it stops admitting, drains for ``runtime.shutdown_grace_s`` and exits, so the
  pod's ``terminationGracePeriodSeconds`` is that grace plus 10 s;
- secrets are files in the secrets folder (``/secrets``), mounted from one Secret named
  ``<name>-secrets`` (one key per secret the package declares);
- ``impasto_queue_depth`` (on ``/metrics``) is the number of admitted predictions waiting
  for the model: the HPA's per-pod target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml

from .spec import UID, BuildSpec, image_name

PROBE_PERIOD_S = 5
QUEUE_METRIC = "impasto_queue_depth"


@dataclass(frozen=True)
class K8sOptions:
    namespace: str | None = None
    replicas: int = 1
    hpa: bool = False
    max_replicas: int = 4
    queue_target: int = 4  # average waiting predictions per pod the HPA keeps
    kserve: bool = False


def _labels(spec: BuildSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": image_name(spec.name)}


def _metadata(spec: BuildSpec, options: K8sOptions, name: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name or image_name(spec.name)}
    if options.namespace:
        meta["namespace"] = options.namespace
    meta["labels"] = {**_labels(spec), "app.kubernetes.io/managed-by": "impasto"}
    return meta


def resources(spec: BuildSpec) -> dict[str, Any]:
    """Requests from ``resources`` (cpu, memory); memory and GPUs also as limits."""
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if spec.cpu:
        requests["cpu"] = spec.cpu
    if spec.memory:
        requests["memory"] = limits["memory"] = spec.memory
    if spec.gpu_count:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(spec.gpu_count)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _probe(path: str, port: Any, failures: int, period: int = PROBE_PERIOD_S) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def container(spec: BuildSpec, name: str, *, kserve: bool = False) -> dict[str, Any]:
    """The model server's container."""
    port: Any = spec.port if kserve else "http"
    c: dict[str, Any] = {"name": name, "image": spec.image, "imagePullPolicy": "IfNotPresent"}
    c["ports"] = (
        [{"containerPort": spec.port, "protocol": "TCP"}]
        if kserve  # Knative names the port itself
        else [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}]
    )
    c["env"] = [{"name": "IMPASTO_HOST", "value": "0.0.0.0"}]
    if spec.secrets:
        c["env"].append({"name": "IMPASTO_SECRETS_DIR", "value": spec.secrets_dir})
    if res := resources(spec):
        c["resources"] = res
    if not kserve:
        c["startupProbe"] = _probe(
            "/health/ready", port, math.ceil(spec.startup_s / PROBE_PERIOD_S)
        )
    c["readinessProbe"] = _probe("/health/ready", port, 2)
    c["livenessProbe"] = _probe("/health/live", port, 3, period=10)
    if spec.secrets:
        c["volumeMounts"] = [{"name": "secrets", "mountPath": spec.secrets_dir, "readOnly": True}]
    if not spec.root_user:
        c["securityContext"] = {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "allowPrivilegeEscalation": False,
        }
    return c


def _pod_extras(spec: BuildSpec) -> dict[str, Any]:
    pod: dict[str, Any] = {"terminationGracePeriodSeconds": spec.termination_grace_s}
    if spec.secrets:
        pod["volumes"] = [
            {"name": "secrets", "secret": {"secretName": f"{image_name(spec.name)}-secrets"}}
        ]
    if spec.gpu_count:
        pod["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return pod


def deployment(spec: BuildSpec, options: K8sOptions) -> dict[str, Any]:
    template_meta: dict[str, Any] = {
        "labels": _labels(spec),
        "annotations": {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(spec.port),
            "prometheus.io/path": "/metrics",
        },
    }
    if spec.accelerator:
        template_meta["annotations"]["impasto.dev/accelerator"] = spec.accelerator
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, options),
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": _labels(spec)},
            "template": {
                "metadata": template_meta,
                "spec": {**_pod_extras(spec), "containers": [container(spec, "model")]},
            },
        },
    }


def service(spec: BuildSpec, options: K8sOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, options),
        "spec": {
            "type": "ClusterIP",
            "selector": _labels(spec),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def autoscaler(spec: BuildSpec, options: K8sOptions) -> dict[str, Any]:
    """Scale on the average number of predictions waiting per pod."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(spec, options),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": image_name(spec.name),
            },
            "minReplicas": options.replicas,
            "maxReplicas": max(options.max_replicas, options.replicas),
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": QUEUE_METRIC},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": str(options.queue_target),
                        },
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def inference_service(spec: BuildSpec, options: K8sOptions) -> dict[str, Any]:
    """A KServe InferenceService with impasto's image as its custom predictor container."""
    predictor: dict[str, Any] = {
        "minReplicas": options.replicas,
        "maxReplicas": max(options.max_replicas, options.replicas),
        **_pod_extras(spec),
        "containers": [container(spec, "kserve-container", kserve=True)],
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(spec, options),
        "spec": {"predictor": predictor},
    }


def render_k8s(spec: BuildSpec, options: K8sOptions | None = None) -> dict[str, list[dict]]:
    """File name -> the objects it holds."""
    options = options or K8sOptions()
    files: dict[str, list[dict]] = {
        "deployment.yaml": [deployment(spec, options)],
        "service.yaml": [service(spec, options)],
    }
    if options.hpa:
        files["hpa.yaml"] = [autoscaler(spec, options)]
    if options.kserve:
        files["kserve/inferenceservice.yaml"] = [inference_service(spec, options)]
    return files


def dump(objects: list[dict]) -> str:
    """Objects as YAML documents."""
    head = "# Generated by `impasto build --format k8s`; rebuild with it rather than editing.\n"
    return head + "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objects)
