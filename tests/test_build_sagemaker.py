"""`impasto build --format sagemaker`: the archive's layout, the extracted folder served by
`impasto serve`, the generated shim driven exactly as the inference toolkit drives it
(model_fn(model_dir), then input_fn, predict_fn, output_fn), and --upload to an S3 server
(moto's) on loopback."""

from __future__ import annotations

import base64
import importlib.util
import inspect
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from build_helpers import (
    EXAMPLES,
    TRUSS_SHARED,
    impasto_wheelhouse,
    octoai_folder,
    sagemaker_folder,
    zero_code_tiny,
)
from conftest import free_port
from impasto.errors import InputError

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """IMPASTO_HOME for the module, holding tiny-sd:golden."""
    from impasto.diffusers import build_tiny_sd
    from impasto.store import ModelStore

    home = tmp_path_factory.mktemp("home")
    saved = os.environ.get("IMPASTO_HOME")
    os.environ["IMPASTO_HOME"] = str(home)
    ModelStore(home).import_folder(
        "tiny-sd:golden", build_tiny_sd(tmp_path_factory.mktemp("w") / "sd")
    )
    yield home
    if saved is None:
        os.environ.pop("IMPASTO_HOME", None)
    else:
        os.environ["IMPASTO_HOME"] = saved


def build(path: Path, out: Path, *extra: str, env: dict[str, str] | None = None):
    cmd = [sys.executable, "-m", "impasto.cli.main", "build", str(path), "--format", "sagemaker"]
    cmd += ["--out", str(out), "--wheelhouse", str(impasto_wheelhouse()), *extra]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )


def archive(path: Path, out: Path) -> Path:
    done = build(path, out)
    assert done.returncode == 0, done.stderr
    assert "SageMaker archive" in done.stdout
    return out


def extract(file: Path, dest: Path) -> Path:
    with tarfile.open(file) as tar:
        tar.extractall(dest, filter="data")
    return dest


def names(file: Path) -> list[str]:
    with tarfile.open(file) as tar:
        return tar.getnames()


def load_shim(folder: Path):
    """code/inference.py imported as the toolkit imports it (code/ on sys.path)."""
    spec = importlib.util.spec_from_file_location("inference", folder / "code" / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toolkit_call(fn, *args):
    """Call a handler as the toolkit does: with the context only if it takes one more."""
    arity = len(inspect.signature(fn).parameters)
    assert arity == len(args), f"{fn.__name__} takes {arity} arguments"
    return fn(*args)


def is_png(data: bytes) -> bool:
    return data[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_sd_archive_layout(home, tmp_path):
    file = archive(EXAMPLES / "tiny-sd", tmp_path / "model.tar.gz")
    found = names(file)
    assert "model_index.json" in found and "unet/config.json" in found  # at the root
    assert {"config.yaml", "model/model.py", "examples.yaml"} <= set(found)
    assert {"code/inference.py", "code/requirements.txt"} <= set(found)
    assert "code/impasto-0.1.0-py3-none-any.whl" in found
    assert "model.yaml" not in found and not any(n.startswith("/") for n in found)
    folder = extract(file, tmp_path / "x")
    assert json.loads((folder / "model_index.json").read_text())["_class_name"]
    requirements = (folder / "code" / "requirements.txt").read_text()
    wheel = "impasto[diffusers] @ file:///opt/ml/model/code/impasto-0.1.0-py3-none-any.whl"
    assert wheel in requirements and "diffusers>=0.35" in requirements
    assert "model: ." in (folder / "config.yaml").read_text()


def test_extracted_archive_serves_with_impasto_serve(home, tmp_path, serve_process):
    """A zero-code package whose weights are only in the archive: an empty store serves it."""
    package = zero_code_tiny(tmp_path / "tiny-zero")
    folder = extract(archive(package, tmp_path / "model.tar.gz"), tmp_path / "model")
    empty = tmp_path / "empty-home"
    server = serve_process(folder, env={"IMPASTO_HOME": str(empty)})
    server.wait_ready(180)
    reply = server.client.post(
        "/invocations",
        json={"inputs": "a fox", "parameters": {"num_inference_steps": 2, "seed": 1}},
        headers={"Accept": "image/png"},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "image/png" and is_png(reply.content)
    native = server.client.post(
        "/text2img", json={"prompt": "a fox", "num_inference_steps": 2}, timeout=120
    )
    assert native.status_code == 200, native.text
    assert server.client.get("/ping").status_code == 200
    assert not (empty / "models").exists()  # the weights came from the archive


def test_generated_shim_runs_the_package_through_the_toolkit_contract(home, tmp_path):
    folder = extract(archive(EXAMPLES / "tiny-sd", tmp_path / "model.tar.gz"), tmp_path / "m")
    shim = load_shim(folder)
    model = toolkit_call(shim.model_fn, str(folder))
    try:
        body = json.dumps({"inputs": "a fox", "parameters": {"num_inference_steps": 2, "seed": 3}})
        data = toolkit_call(shim.input_fn, body.encode(), "application/json")
        prediction = toolkit_call(shim.predict_fn, data, model)
        png = toolkit_call(shim.output_fn, prediction, "image/png")
        assert is_png(png)
        assert Image.open(io.BytesIO(png)).size == (64, 64)
        as_json = json.loads(toolkit_call(shim.output_fn, prediction, "application/json"))
        assert is_png(base64.b64decode(as_json["images"][0]["data"]))
        again = toolkit_call(
            shim.output_fn, toolkit_call(shim.predict_fn, data, model), "image/png"
        )
        assert again == png  # same seed, same image: impasto's runtime, not the toolkit's

        other = json.dumps(
            {
                "endpoint": "img2img",
                "inputs": "x",
                "parameters": {"image": base64.b64encode(png).decode(), "num_inference_steps": 2},
            }
        )
        result = shim.predict_fn(shim.input_fn(other, "application/json"), model)
        assert is_png(shim.output_fn(result, "image/png"))

        too_many = json.dumps({"inputs": "a fox", "parameters": {"num_inference_steps": 999}})
        with pytest.raises(InputError, match="num_inference_steps"):  # the toolkit's 400
            shim.predict_fn(shim.input_fn(too_many, "application/json"), model)
        with pytest.raises(InputError, match="text/csv"):
            shim.predict_fn(shim.input_fn(b"inputs\nx", "text/csv"), model)
    finally:
        model.close()


def test_custom_and_octoai_packages_archive_with_the_shim(home, tmp_path):
    tools = extract(archive(EXAMPLES / "image-tools", tmp_path / "t.tar.gz"), tmp_path / "t")
    assert (tools / "model" / "model.py").is_file() and not (tools / "model_index.json").exists()
    shim = load_shim(tools)
    model = shim.model_fn(str(tools))
    try:
        body = {"endpoint": "render", "text": "hi", "width": 64, "height": 32}
        reply = shim.output_fn(
            shim.predict_fn(shim.input_fn(json.dumps(body), "application/json"), model),
            "image/png",
        )
        assert is_png(reply) and Image.open(io.BytesIO(reply)).size == (64, 32)
    finally:
        model.close()

    service = octoai_folder(tmp_path / "octo")
    octo = extract(archive(service, tmp_path / "o.tar.gz"), tmp_path / "o")
    assert (octo / "service.py").is_file()
    assert "pillow>=10.3" in (octo / "code" / "requirements.txt").read_text()
    shim = load_shim(octo)
    model = shim.model_fn(str(octo))
    try:
        data = shim.input_fn(json.dumps({"prompt": {"text": "abc"}}), "application/json")
        out = json.loads(shim.output_fn(shim.predict_fn(data, model), "application/json"))
        assert out  # the service's Image, JSON-encoded by impasto
    finally:
        model.close()


def test_a_truss_package_archives_with_its_external_package_dirs(home, tmp_path):
    """echo (Truss-shaped, ``external_package_dirs: [../shared_lib]``): the shared folder
    travels inside the archive and config.yaml points at it there."""
    import yaml

    folder = extract(archive(TRUSS_SHARED, tmp_path / "echo.tar.gz"), tmp_path / "echo")
    assert (folder / "external" / "0-shared_lib" / "extlib.py").is_file()
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["external_package_dirs"] == ["./external/0-shared_lib"]
    assert config["environment_variables"] == {"ECHO_MODE": "loud"}  # the rest as it was
    shim = load_shim(folder)
    model = shim.model_fn(str(folder))
    try:
        data = shim.input_fn(json.dumps({"text": "hi"}), "application/json")
        out = json.loads(shim.output_fn(shim.predict_fn(data, model), "application/json"))
        assert out["shout"] == "HI" and out["suffix"] == "(from an external package dir)"
        assert out["stages"] == ["preprocess", "predict", "postprocess"]
    finally:
        model.close()


def test_a_sagemaker_folder_is_archived_as_it_is(home, tmp_path):
    folder = sagemaker_folder(tmp_path / "sm")
    found = names(archive(folder, tmp_path / "sm.tar.gz"))
    assert sorted(found) == ["code/inference.py", "code/requirements.txt"]


def test_upload_to_s3_prints_the_model_data_url(home, tmp_path):
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        s3 = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        s3.create_bucket(Bucket="models")
        out = tmp_path / "model.tar.gz"
        done = build(EXAMPLES / "image-tools", out, "--upload", "s3://models/tools/", env=env)
        assert done.returncode == 0, done.stderr
        assert "ModelDataUrl: s3://models/tools/model.tar.gz" in done.stdout
        stored = s3.get_object(Bucket="models", Key="tools/model.tar.gz")["Body"].read()
        assert stored == out.read_bytes()

        done = build(EXAMPLES / "image-tools", out, "--upload", "s3://no-such-bucket/x", env=env)
        assert done.returncode == 14 and "no-such-bucket" in done.stderr
        done = build(EXAMPLES / "image-tools", out, "--upload", "models/x", env=env)
        assert done.returncode == 14 and "s3://BUCKET/KEY" in done.stderr
    finally:
        server.stop()
