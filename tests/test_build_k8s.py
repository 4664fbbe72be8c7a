"""`impasto build --format k8s`: golden manifests, every object checked against the
Kubernetes JSON schemas in strict mode (an unknown field fails), and the values that
encode how impasto's server behaves (probes, grace period, GPUs, secrets, queue depth)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from build_helpers import EXAMPLES, GPU_PACKAGE, check_golden
from impasto.build import BuildOptions, K8sOptions, build_spec, render_k8s
from impasto.build.k8s import dump

K8S_VERSION = kubernetes_validate.latest_version()
# KServe v1beta1 ComponentExtensionSpec fields a predictor may carry beside its PodSpec.
KSERVE_PREDICTOR_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "scaleMetricType",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
    "autoScaling",
    "model",
    "workerSpec",
}

CASES = {
    "tiny-sd": (EXAMPLES / "tiny-sd", K8sOptions()),
    "sdxl-gpu": (
        GPU_PACKAGE,
        K8sOptions(namespace="models", hpa=True, max_replicas=8, kserve=True),
    ),
}


def validate(obj: dict) -> None:
    """Strict schema validation; an InferenceService's predictor as the PodSpec it embeds."""
    if obj["kind"] != "InferenceService":
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        return
    assert obj["apiVersion"] == "serving.kserve.io/v1beta1"
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(obj["spec"]) == {"predictor"}
    predictor = obj["spec"]["predictor"]
    pod_spec = {k: v for k, v in predictor.items() if k not in KSERVE_PREDICTOR_FIELDS}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": obj["metadata"], "spec": pod_spec}
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", list(CASES))
def test_manifests_golden_and_valid(name):
    path, options = CASES[name]
    files = render_k8s(build_spec(path), options)
    for file, objects in files.items():
        check_golden(f"k8s/{name}/{file}", dump(objects))
        for obj in objects:
            validate(obj)
    expected = {"deployment.yaml", "service.yaml"}
    if options.hpa:
        expected.add("hpa.yaml")
    if options.kserve:
        expected.add("kserve/inferenceservice.yaml")
    assert set(files) == expected


def test_a_misspelt_field_fails_validation():
    files = render_k8s(build_spec(EXAMPLES / "tiny-sd"))
    deployment = copy.deepcopy(files["deployment.yaml"][0])
    pod = deployment["spec"]["template"]["spec"]
    pod["containers"][0]["readinesProbe"] = pod["containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        validate(deployment)
    isvc = render_k8s(build_spec(EXAMPLES / "tiny-sd"), K8sOptions(kserve=True))
    isvc = copy.deepcopy(isvc["kserve/inferenceservice.yaml"][0])
    isvc["spec"]["predictor"]["terminationGracePeriod"] = 30
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationGracePeriod"):
        validate(isvc)


def test_values_follow_the_server():
    spec = build_spec(GPU_PACKAGE)
    files = render_k8s(spec, K8sOptions(hpa=True, kserve=True, queue_target=2))
    pod = files["deployment.yaml"][0]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 50  # shutdown_grace_s 40 + 10
    (model,) = pod["containers"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "2"  # accelerator H100:2
    assert model["resources"]["requests"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"}
    assert model["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert model["livenessProbe"]["httpGet"]["path"] == "/health/live"
    startup = model["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 900  # load_timeout_s
    assert model["volumeMounts"] == [{"name": "secrets", "mountPath": "/secrets", "readOnly": True}]
    assert pod["volumes"][0]["secret"]["secretName"] == "sdxl-gpu-secrets"
    metric = files["hpa.yaml"][0]["spec"]["metrics"][0]["pods"]
    assert metric == {
        "metric": {"name": "impasto_queue_depth"},
        "target": {"type": "AverageValue", "averageValue": "2"},
    }
    predictor = files["kserve/inferenceservice.yaml"][0]["spec"]["predictor"]
    assert predictor["containers"][0]["name"] == "kserve-container"
    assert predictor["terminationGracePeriodSeconds"] == 50

    tiny = render_k8s(build_spec(EXAMPLES / "tiny-sd"))["deployment.yaml"][0]
    pod = tiny["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 35  # the default 25 s grace + 10
    assert "volumes" not in pod and "tolerations" not in pod
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "2", "memory": "2Gi"},
        "limits": {"memory": "2Gi"},
    }
    assert pod["containers"][0]["securityContext"]["runAsUser"] == 10001
    assert pod["containers"][0]["image"] == "impasto/tiny-sd:latest"
    tagged = build_spec(EXAMPLES / "tiny-sd", BuildOptions(tag="registry.example/tiny:1"))
    assert (
        render_k8s(tagged)["deployment.yaml"][0]["spec"]["template"]["spec"]["containers"][0][
            "image"
        ]
        == "registry.example/tiny:1"
    )


CHECKER = Path(__file__).parent / "k8s_models_check.py"


@pytest.fixture(scope="module")
def kserve_models() -> Path:
    """A venv with the kserve SDK's typed models (installed without its dependencies)."""
    from client_venvs import client_venv

    return client_venv("kserve-models-0.21.0", ["--no-deps", "kserve==0.21.0", "six", "urllib3"])


def model_errors(python: Path, objects: list[dict]) -> list[list[str]]:
    typed = [["V1beta1InferenceService", o] for o in objects]
    done = subprocess.run(
        [str(python), str(CHECKER)],
        input=json.dumps(typed),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_inference_services_match_the_kserve_sdk_models(kserve_models):
    objects = [
        render_k8s(build_spec(path), K8sOptions(kserve=True, hpa=True))[
            "kserve/inferenceservice.yaml"
        ][0]
        for path, _ in CASES.values()
    ]
    assert model_errors(kserve_models, objects) == [[], []]

    isvc = copy.deepcopy(objects[0])
    isvc["spec"]["predictor"]["minReplica"] = 1
    isvc["spec"]["predictor"]["maxReplicas"] = "4"
    (errors,) = model_errors(kserve_models, [isvc])
    assert any("unknown field 'minReplica'" in e for e in errors)
    assert any("maxReplicas: expected int" in e for e in errors)


def test_cli_writes_the_files(tmp_path: Path):
    out = tmp_path / "k8s"
    cmd = [sys.executable, "-m", "impasto.cli.main", "build", str(GPU_PACKAGE), "--format", "k8s"]
    cmd += ["--out", str(out), "--hpa", "--kserve", "--namespace", "models", "--max-replicas", "8"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for file, objects in render_k8s(build_spec(GPU_PACKAGE), CASES["sdxl-gpu"][1]).items():
        assert list(yaml.safe_load_all((out / file).read_text())) == objects
    assert f"kubectl apply -f {out}" in done.stdout
