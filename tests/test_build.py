"""`impasto build` for containers: golden Dockerfiles for every kind of package, hadolint on
each, the entrypoint's arguments, the spec's rules, and the context the command writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from build_helpers import (
    EXAMPLES,
    GPU_PACKAGE,
    TRUSS_PACKAGE,
    TRUSS_SHARED,
    check_golden,
    impasto_wheelhouse,
    octoai_folder,
    sagemaker_folder,
    zero_code_tiny,
)
from impasto.build import BuildOptions, build_spec, render_dockerfile, render_entrypoint
from impasto.errors import ConfigError

HADOLINT = Path(sys.executable).parent / "hadolint"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A model store holding tiny-sd:golden (IMPASTO_HOME for the module)."""
    from impasto.diffusers import build_tiny_sd
    from impasto.store import ModelStore

    home = tmp_path_factory.mktemp("home")
    saved = os.environ.get("IMPASTO_HOME")
    os.environ["IMPASTO_HOME"] = str(home)
    folder = build_tiny_sd(tmp_path_factory.mktemp("weights") / "sd")
    ModelStore(home).import_folder("tiny-sd:golden", folder)
    yield home
    if saved is None:
        os.environ.pop("IMPASTO_HOME", None)
    else:
        os.environ["IMPASTO_HOME"] = saved


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("kinds")
    return {
        "sm-folder": sagemaker_folder(base / "sm-folder"),
        "octo-service": octoai_folder(base / "octo-service"),
        "tiny-zero": zero_code_tiny(base / "tiny-zero"),
    }


def hadolint(text: str) -> None:
    done = subprocess.run(
        [str(HADOLINT), "-"], input=text, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"hadolint:\n{done.stdout}{done.stderr}"


CASES = {
    "tiny-sd": (EXAMPLES / "tiny-sd", BuildOptions(wheelhouse=True)),
    "image-tools": (EXAMPLES / "image-tools", BuildOptions()),
    "sdxl-gpu": (GPU_PACKAGE, BuildOptions()),
    "sdxl-gpu-no-bake": (GPU_PACKAGE, BuildOptions(bake=False, tag="registry.example/sdxl:1")),
    "sm-folder": (None, BuildOptions()),
    "octo-service": (None, BuildOptions(base_image="localhost/impasto-base:bookworm")),
    "tiny-zero": (None, BuildOptions(ui=True)),
    "truss-stages": (TRUSS_PACKAGE, BuildOptions()),
    "truss-shared": (TRUSS_SHARED, BuildOptions()),
}


@pytest.mark.parametrize("name", list(CASES))
def test_dockerfile_golden_and_hadolint_clean(name, store, folders):
    path, options = CASES[name]
    spec = build_spec(path or folders[name], options)
    dockerfile = render_dockerfile(spec)
    check_golden(f"{name}.Dockerfile", dockerfile)
    check_golden(f"{name}.entrypoint", render_entrypoint(spec))
    hadolint(dockerfile)


def test_each_kind_is_recognised_without_importing_its_code(store, folders):
    kinds = {name: build_spec(folders[name]).kind for name in folders}
    assert kinds == {"sm-folder": "sagemaker", "octo-service": "octoai", "tiny-zero": "diffusers"}
    assert build_spec(EXAMPLES / "image-tools").kind == "custom"  # @impasto.endpoint too
    assert build_spec(TRUSS_PACKAGE).kind == "truss" and build_spec(TRUSS_SHARED).kind == "truss"
    assert build_spec(EXAMPLES / "tiny-sd").kind == "diffusers"
    sm = build_spec(folders["sm-folder"])
    assert sm.package_dir == "/opt/ml/model" and sm.root_user  # SageMaker runs images as root
    assert "USER" not in render_dockerfile(sm)
    assert "USER 10001:10001" in render_dockerfile(build_spec(folders["octo-service"]))


def test_weights_come_before_the_code_so_code_changes_keep_them(store):
    tiny = render_dockerfile(build_spec(EXAMPLES / "tiny-sd"))
    assert "tiny-sd:golden, exported from the model store" in tiny
    assert tiny.index("COPY --chown=10001:10001 store/") < tiny.index("COPY package/ /app/")
    gpu = render_dockerfile(build_spec(GPU_PACKAGE))
    download = gpu.index('RUN ["impasto", "setup", "/app", "--download-only"]')
    assert gpu.index("COPY package/config.yaml /app/config.yaml") < download
    assert download < gpu.index("COPY package/ /app/")
    assert "madebyollin/sdxl-vae-fp16-fix" in gpu and "stabilityai/stable-diffusion-xl" in gpu
    # the runtime is offline once baked; not baked, it downloads at start
    assert gpu.index("ENV HF_HUB_OFFLINE=1") > gpu.index("COPY package/ /app/")
    unbaked = build_spec(GPU_PACKAGE, BuildOptions(bake=False))
    assert "HF_HUB_OFFLINE" not in render_dockerfile(unbaked)
    assert "impasto setup /app --download-only" in render_entrypoint(unbaked)


def test_the_spec_reads_resources_python_and_rejects_what_cannot_build(tmp_path, store):
    gpu = build_spec(GPU_PACKAGE)
    assert (gpu.gpu, gpu.gpu_count, gpu.python_version) == (True, 2, "3.12")
    assert gpu.base_image.startswith("nvidia/cuda:") and gpu.python_from_apt
    assert not gpu.setup  # a GPU model is not loaded on a build host without one
    assert build_spec(GPU_PACKAGE, BuildOptions(setup=True)).setup
    assert gpu.termination_grace_s == 50 and gpu.startup_s == 960
    assert gpu.image == "impasto/sdxl-gpu:latest"
    tiny = build_spec(EXAMPLES / "tiny-sd")
    assert (tiny.gpu, tiny.base_image, tiny.setup) == (False, "python:3.11-slim-bookworm", True)
    assert tiny.termination_grace_s == 35 and tiny.extras == ("diffusers",)
    assert build_spec(EXAMPLES / "image-tools").extras == ()

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.yaml").write_text("system_packages: ['curl; rm -rf /']\n")
    with pytest.raises(ConfigError, match="system_packages"):
        build_spec(bad)
    (bad / "config.yaml").write_text("python_version: py311\nresources: {use_gpu: true}\n")
    with pytest.raises(ConfigError, match="--base-image"):
        build_spec(bad)
    assert build_spec(bad, BuildOptions(base_image="my/cuda:1")).base_image == "my/cuda:1"

    # Truss's base_image: the image, and where its Python is
    (bad / "config.yaml").write_text(
        "base_image: {image: my/conda:1, python_executable_path: /opt/conda/bin/python}\n"
    )
    conda = build_spec(bad)
    assert (conda.base_image, conda.python) == ("my/conda:1", "/opt/conda/bin/python")
    assert "RUN /opt/conda/bin/python -m venv /opt/venv" in render_dockerfile(conda)
    (bad / "config.yaml").write_text("base_image: {image: x, python_executable_path: 'py; ls'}\n")
    with pytest.raises(ConfigError, match="python_executable_path"):
        build_spec(bad)


def test_entrypoint_drops_a_leading_serve_and_passes_the_rest(tmp_path, store):
    """The rendered script run by sh with a stand-in `impasto` that prints its arguments."""
    script = tmp_path / "entrypoint"
    script.write_text(render_entrypoint(build_spec(EXAMPLES / "image-tools")))
    script.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "impasto").write_text('#!/bin/sh\necho "$@"\n')
    (bin_dir / "impasto").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def run(*args: str) -> str:
        done = subprocess.run([str(script), *args], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run() == "serve /app"
    assert run("serve") == "serve /app"  # SageMaker's `docker run IMAGE serve`
    assert run("--log-level", "debug") == "serve /app --log-level debug"
    assert run("serve", "--port", "9000") == "serve /app --port 9000"


def test_cli_writes_the_context(tmp_path, store):
    wheelhouse = impasto_wheelhouse()
    out = tmp_path / "ctx"
    cmd = [sys.executable, "-m", "impasto.cli.main", "build", str(EXAMPLES / "tiny-sd")]
    cmd += ["--out", str(out), "--wheelhouse", str(wheelhouse)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    spec = build_spec(EXAMPLES / "tiny-sd", BuildOptions(wheelhouse=True))
    assert (out / "Dockerfile").read_text() == render_dockerfile(spec)
    assert os.access(out / "impasto-entrypoint", os.X_OK)
    assert (out / "impasto" / spec.impasto_wheel).is_file()
    assert not any((out / "wheels").iterdir())  # impasto's own wheel is not in the wheelhouse
    assert "starlette" in (out / "requirements" / "impasto.txt").read_text()
    assert (out / "store" / "tiny-sd" / "golden" / "model.yaml").is_file()
    assert (out / "store" / "tiny-sd" / "golden" / "model_index.json").is_file()
    assert (out / "package" / "model" / "model.py").is_file()
    assert not list((out / "package").rglob("__pycache__"))
    assert "torch" in (out / "requirements" / "config.txt").read_text()
    assert f"podman build --format docker -t impasto/tiny-sd:latest {out}" in done.stdout

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # rewrites its own
    assert done.returncode == 0, done.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    cmd[cmd.index(str(out))] = str(foreign)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 14 and "not empty" in done.stderr
    assert (foreign / "notes.txt").read_text() == "mine"


def test_engine_missing_prints_the_command(tmp_path, store, monkeypatch):
    from impasto.build.targets import container_context

    wheelhouse = impasto_wheelhouse()
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman, no docker
    result = container_context(
        EXAMPLES / "image-tools",
        tmp_path / "ctx",
        BuildOptions(wheelhouse=True),
        wheelhouse=wheelhouse,
        engine="docker",
    )
    assert not result.built and result.notes == ["docker is not installed here"]
    assert result.command[:2] == ["docker", "build"]
    assert shutil.which("docker") is None


def setup_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "impasto.cli.main", "setup", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_setup_download_only_reads_the_config_and_imports_no_code(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text("raise SystemExit('imported!')\n")
    (tmp_path / "config.yaml").write_text("model_name: nothing-to-fetch\n")
    done = setup_cli(str(tmp_path), "--download-only")
    assert done.returncode == 0, done.stderr
    assert "0 download(s) in place" in done.stdout

    (tmp_path / "config.yaml").write_text(
        "model_cache:\n  - repo_id: some-org/some-weights\n    allow_patterns: ['*.json']\n"
    )
    done = setup_cli(str(tmp_path), "--download-only", env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 11, done.stderr  # StoreError: says what failed and why
    assert "some-org/some-weights" in done.stderr and "HF_HUB_OFFLINE" in done.stderr


def test_a_dot_slash_model_path_is_relative_to_the_package(tmp_path, monkeypatch):
    from impasto.diffusers import build_tiny_sd
    from impasto.package import load_package

    package = zero_code_tiny(tmp_path / "pkg", model="./weights")
    build_tiny_sd(package / "weights")
    monkeypatch.chdir(tmp_path)  # anywhere but the package
    loaded = load_package(package)
    assert loaded.config.diffusers.model == str((package / "weights").resolve())
    assert set(loaded.spec.endpoints) == {"text2img"}


def test_only_one_build_module_runs_programs():
    from impasto import build

    folder = Path(build.__file__).parent
    running = sorted(
        p.name for p in folder.glob("*.py") if "subprocess" in p.read_text(encoding="utf-8")
    )
    assert running == ["shell.py"]


SEED_FOLDERS = {"truss-stages": TRUSS_PACKAGE, "truss-shared": TRUSS_SHARED}


@pytest.mark.parametrize(
    "name",
    ["tiny-sd", "tiny-svd", "image-tools", "sm-folder", "octo-service", "tiny-zero", *SEED_FOLDERS],
)
def test_every_example_and_seed_folder_builds_all_three_formats(name, tmp_path, store, folders):
    import tarfile

    from impasto.build.k8s import K8sOptions
    from impasto.build.targets import container_context, k8s_manifests, sagemaker_archive

    path = folders.get(name) or SEED_FOLDERS.get(name) or EXAMPLES / name
    wheels = impasto_wheelhouse()
    options = BuildOptions(wheelhouse=True)
    result = container_context(path, tmp_path / "ctx", options, wheelhouse=wheels)
    hadolint((result.context / "Dockerfile").read_text())
    assert (result.context / "package").is_dir() and not result.built
    _, archive = sagemaker_archive(path, tmp_path / "model.tar.gz", options, wheelhouse=wheels)
    with tarfile.open(archive) as tar:
        members = tar.getnames()
    assert "code/inference.py" in members
    assert not any(m.split("/")[0] == path.name for m in members)  # no top folder
    _, files = k8s_manifests(path, tmp_path / "k8s", options, K8sOptions(kserve=True))
    assert sorted(f.name for f in files) == [
        "deployment.yaml",
        "inferenceservice.yaml",
        "service.yaml",
    ]


def test_external_package_dirs_go_where_config_yaml_expects_them(tmp_path, store):
    """``../shared_lib`` of a package at /app is /shared_lib in the image; the context holds
    it apart from the package, so config.yaml is copied unchanged."""
    from impasto.build.targets import container_context

    spec = build_spec(TRUSS_SHARED)
    ((slot, target),) = [(d.slot, d.image_path) for d in spec.external]
    assert (slot, target) == ("0-shared_lib", "/shared_lib")
    dockerfile = render_dockerfile(spec)
    assert f"COPY external/{slot}/ /shared_lib/" in dockerfile
    assert dockerfile.index("/shared_lib/") < dockerfile.index("COPY package/ /app/")
    wheels = impasto_wheelhouse()
    ctx = container_context(TRUSS_SHARED, tmp_path / "ctx", BuildOptions(), wheelhouse=wheels)
    ctx = ctx.context
    assert (ctx / "external" / slot / "extlib.py").is_file()
    assert (ctx / "package" / "config.yaml").read_text() == (
        TRUSS_SHARED / "config.yaml"
    ).read_text()

    inside = tmp_path / "pkg"
    shutil.copytree(TRUSS_SHARED, inside)
    shutil.copytree(TRUSS_SHARED.parent / "shared_lib", inside / "lib")
    (inside / "config.yaml").write_text(
        (inside / "config.yaml").read_text().replace("../shared_lib", "./lib")
    )
    assert build_spec(inside).external == ()  # inside the package: copied with it
    usr = os.path.relpath("/usr", inside)  # /app/../../usr in the image: /usr
    for entry, message in [("../nowhere", "not a folder"), (usr, "system folder")]:
        (inside / "config.yaml").write_text(f"external_package_dirs: [{entry}]\n")
        with pytest.raises(ConfigError, match=message):
            build_spec(inside)


def test_cli_refuses_options_of_another_format(tmp_path):
    """In process (typer's runner): each refusal is the CLI's own exit code and message."""
    from typer.testing import CliRunner

    from impasto.cli.main import app

    base = ["build", str(EXAMPLES / "image-tools")]
    for extra, message in [
        (["--out", str(tmp_path / "a"), "--push"], "--push needs --engine"),
        (
            ["--out", str(tmp_path / "b"), "--format", "k8s", "--engine", "podman"],
            "--format docker",
        ),
        (["--out", str(tmp_path / "c"), "--upload", "s3://b/k"], "--format sagemaker"),
        (["--out", str(tmp_path / "m.zip"), "--format", "sagemaker"], ".tar.gz"),
    ]:
        done = CliRunner().invoke(app, base + extra)
        assert done.exit_code == 14 and message in done.output, (extra, done.output)


def test_truss_external_data_is_fetched_by_setup_and_baked_by_the_download_step(tmp_path):
    """Truss's ``external_data``: `impasto setup --download-only` fetches each url (here from
    a file server on loopback) into the data folder, once; the image's download step does
    it with config.yaml alone, in a package folder its user may write."""
    import http.server
    import threading
    from functools import partial

    from typer.testing import CliRunner

    from impasto.cli.main import app

    served = tmp_path / "served"
    served.mkdir()
    (served / "weights.bin").write_bytes(b"\x00weights" * 1000)
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(Handler, directory=str(served))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/weights.bin"
    try:
        package = tmp_path / "truss-data"
        (package / "model").mkdir(parents=True)
        (package / "model" / "model.py").write_text(
            "class Model:\n    def predict(self, x):\n        return x\n"
        )
        (package / "config.yaml").write_text(
            f"external_data:\n  - url: {url}\n    local_data_path: ckpt/weights.bin\n"
        )
        for _ in range(2):
            done = CliRunner().invoke(app, ["setup", str(package), "--download-only"])
            assert done.exit_code == 0, done.output
            assert "1 download(s) in place" in done.output
        assert (package / "data" / "ckpt" / "weights.bin").read_bytes() == b"\x00weights" * 1000
        assert hits == ["/weights.bin"]  # one request: the second run kept the file

        spec = build_spec(package)
        assert spec.kind == "truss" and spec.downloads == (url,) and spec.data_downloads
        dockerfile = render_dockerfile(spec)
        assert "install -d -o 10001 -g 10001 /var/lib/impasto /app" in dockerfile
        assert dockerfile.index('"--download-only"]') < dockerfile.index("COPY package/ /app/")

        (package / "config.yaml").write_text(
            f"external_data:\n  - url: {url}\n    local_data_path: ../../escape.bin\n"
        )
        done = CliRunner().invoke(app, ["setup", str(package), "--download-only"])
        assert done.exit_code != 0 and "local_data_path" in done.output
        (package / "config.yaml").write_text(
            f"external_data:\n  - url: {url}.missing\n    local_data_path: other.bin\n"
        )
        done = CliRunner().invoke(app, ["setup", str(package), "--download-only"])
        assert done.exit_code != 0 and "404" in done.output
        assert not (package / "data" / "other.bin").exists()
        assert not (package / "data" / "other.bin.partial").exists()
    finally:
        server.shutdown()
