"""The local model store: refs, atomic imports, verification, archives, the hub path and the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from impasto.errors import NotFound, StoreError
from impasto.store import ModelRef, ModelStore, manifest_hash, signatures_for
from impasto.store import hub as store_hub

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A "micro" StableDiffusionPipeline written by save_pretrained (built once per session)."""
    from impasto.diffusers import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("sd-micro") / "sd", micro=True)


def _weights(path: Path, seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    save_file({"weight": torch.randn(16, 16, generator=gen)}, str(path))


def make_pipeline_folder(root: Path, class_name: str = "StableDiffusionPipeline") -> Path:
    """A diffusers-like folder: model_index.json, configs and two safetensors files."""
    root.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": class_name, "_diffusers_version": "0.42.1"}
    index |= {"unet": ["diffusers", "UNet2DConditionModel"]}
    (root / "model_index.json").write_text(json.dumps(index))
    (root / "unet").mkdir(exist_ok=True)
    (root / "unet" / "config.json").write_text('{"sample_size": 8}')
    _weights(root / "unet" / "diffusion_pytorch_model.safetensors", 1)
    _weights(root / "text_encoder" / "model.safetensors", 2)
    return root


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    monkeypatch.setenv("IMPASTO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("IMPASTO_SECRETS_DIR", str(tmp_path / "no-secrets"))
    return ModelStore()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_pipeline_folder(tmp_path / "src")


def cli(*args: str, input: str | None = None) -> Any:
    """Run ``impasto models ...`` mounted the way the main CLI mounts it."""
    from impasto.cli import models

    root = typer.Typer()
    root.callback()(lambda: None)
    root.add_typer(models.app, name="models")
    return CliRunner().invoke(root, ["models", *args], input=input)


def leftovers(store: ModelStore) -> list[str]:
    found = []
    for d in (store.models_dir, store.tmp_dir):
        if d.exists():
            found += [str(p.relative_to(store.home)) for p in d.rglob("*")]
    return found


# -- refs ---------------------------------------------------------------------------------------


def test_ref_parse_and_str() -> None:
    assert ModelRef.parse("sd15:v1.0") == ModelRef("sd15", "v1.0")
    assert str(ModelRef.parse("sd15")) == "sd15:latest"
    assert ModelRef.parse("sd15").is_latest


@pytest.mark.parametrize(
    "text",
    ["../etc", "a/b", "sd:../../x", "sd:a/b", "..", "-x", "sd:", ":v1", "a" * 65, "sd:v 1", "é"],
)
def test_invalid_refs_refused(text: str) -> None:
    with pytest.raises(StoreError):
        ModelRef.parse(text)


def test_uppercase_refused_with_hint() -> None:
    with pytest.raises(StoreError, match=r"lowercase.*'mymodel'"):
        ModelRef.parse("MyModel:v1")


def test_traversal_in_ref_never_touches_disk(store: ModelStore, folder: Path) -> None:
    for bad in ("../escape:v1", "ok:../../escape"):
        with pytest.raises(StoreError):
            store.import_folder(bad, folder)
    assert not (store.home.parent / "escape").exists()
    assert leftovers(store) == []


def test_is_ref(store: ModelStore, folder: Path) -> None:
    assert store.is_ref("demo:v1") and store.is_ref("demo:latest")
    assert not store.is_ref("demo")  # bare name: only once stored
    store.import_folder("demo:v1", folder)
    assert store.is_ref("demo")
    assert not store.is_ref("org/repo") and not store.is_ref("./demo")
    assert not store.is_ref(str(folder))


# -- importing ----------------------------------------------------------------------------------


def test_import_folder_writes_manifest(store: ModelStore, folder: Path) -> None:
    stored = store.import_folder("demo:v1", folder)
    assert stored.path == store.home / "models" / "demo" / "v1"
    m = stored.manifest
    assert (m.name, m.version, m.framework) == ("demo", "v1", "diffusers")
    assert m.pipeline_class == "StableDiffusionPipeline"
    assert m.source == {"type": "folder", "path": str(folder.resolve())}
    assert m.signatures == {t: {"batchable": True} for t in ("text2img", "img2img", "inpaint")}
    rel = "unet/diffusion_pytorch_model.safetensors"
    data = (folder / rel).read_bytes()
    assert m.files[rel].sha256 == hashlib.sha256(data).hexdigest()
    assert m.files[rel].size == len(data)
    assert m.size == sum(e.size for e in m.files.values())
    assert m.manifest_hash == manifest_hash(m.files)
    assert not m.allow_pickle
    on_disk = yaml.safe_load((stored.path / "model.yaml").read_text())
    assert on_disk["files"][rel]["sha256"] == m.files[rel].sha256
    assert on_disk["created"] == m.created and m.created.endswith("+00:00")
    assert store.resolve("demo:v1", verify=True) == stored
    assert list((store.tmp_dir).iterdir()) == []


def test_plain_files_and_signatures() -> None:
    assert signatures_for("StableDiffusionXLInpaintPipeline")["inpaint"] == {"batchable": True}
    assert signatures_for("StableVideoDiffusionPipeline") == {"img2vid": {"batchable": False}}
    assert signatures_for("SomethingElse") == {} and signatures_for(None) == {}


def test_folder_without_model_index_is_files(store: ModelStore, tmp_path: Path) -> None:
    src = tmp_path / "plain"
    _weights(src / "weights.safetensors", 3)
    stored = store.import_folder("plain:v1", src)
    assert (stored.manifest.framework, stored.manifest.pipeline_class) == ("files", None)
    assert stored.manifest.signatures == {}


def test_generated_version_and_latest(store: ModelStore, folder: Path) -> None:
    first = store.import_folder("demo", folder)
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", first.ref.version)
    # "latest" goes by creation time, not by the version's spelling
    store.import_folder("demo:zzz-old", folder)
    newest = store.import_folder("demo:aaa-new", folder)
    assert store.resolve("demo:latest").ref == newest.ref
    assert store.resolve("demo").ref == ModelRef("demo", "aaa-new")
    assert [s.ref.version for s in store.list()] == [first.ref.version, "zzz-old", "aaa-new"]


def test_latest_is_reserved(store: ModelStore, folder: Path) -> None:
    with pytest.raises(StoreError, match="reserved"):
        store.import_folder("demo:latest", folder)


def test_existing_version_needs_force(store: ModelStore, folder: Path) -> None:
    store.import_folder("demo:v1", folder)
    with pytest.raises(StoreError, match="--force"):
        store.import_folder("demo:v1", folder)
    (folder / "extra.json").write_text("{}")
    replaced = store.import_folder("demo:v1", folder, force=True)
    assert "extra.json" in replaced.manifest.files
    assert [s.ref for s in store.list()] == [ModelRef("demo", "v1")]
    assert list(store.tmp_dir.iterdir()) == []


def test_unknown_ref_is_not_found(store: ModelStore) -> None:
    with pytest.raises(NotFound, match=r"nope:v1.*impasto models list.*impasto models import"):
        store.resolve("nope:v1")
    with pytest.raises(NotFound, match="nope:latest"):
        store.resolve("nope")


def test_pickle_refused_then_allowed(store: ModelStore, folder: Path) -> None:
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    (folder / "extra.ckpt").write_bytes(b"pickle")
    with pytest.raises(StoreError) as info:
        store.import_folder("demo:v1", folder)
    assert "unet/diffusion_pytorch_model.bin" in info.value.message
    assert "extra.ckpt" in info.value.message and "--allow-pickle" in info.value.message
    assert leftovers(store) == []
    stored = store.import_folder("demo:v1", folder, allow_pickle=True)
    assert stored.manifest.allow_pickle
    assert "extra.ckpt" in stored.manifest.files


def test_failed_import_leaves_nothing(store: ModelStore, folder: Path) -> None:
    victim = folder / "unet" / "diffusion_pytorch_model.safetensors"
    seen = []

    def progress(rel: str, done: int, total: int) -> None:
        seen.append((rel, done, total))
        victim.unlink(missing_ok=True)  # a file vanishes mid-import

    with pytest.raises(StoreError, match="disappeared"):
        store.import_folder("demo:v1", folder, progress=progress)
    assert seen and seen[0][2] > 0
    assert leftovers(store) == []
    with pytest.raises(NotFound):
        store.resolve("demo:v1")


def test_invalid_model_index_leaves_nothing(store: ModelStore, folder: Path) -> None:
    (folder / "model_index.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"model_index\.json"):
        store.import_folder("demo:v1", folder)
    assert leftovers(store) == []


def test_resolve_checks_sizes_and_verify_checks_hashes(store: ModelStore, folder: Path) -> None:
    stored = store.import_folder("demo:v1", folder)
    weights = stored.path / "text_encoder" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes
    weights.write_bytes(bytes(data))
    assert store.resolve("demo:v1").ref == stored.ref
    with pytest.raises(StoreError, match=r"text_encoder/model.safetensors has sha256") as info:
        store.resolve("demo:v1", verify=True)
    assert "impasto models import demo:v1" in info.value.message
    weights.write_bytes(bytes(data[:-10]))
    with pytest.raises(StoreError, match=r"is \d+ bytes, expected \d+.*impasto models import"):
        store.resolve("demo:v1")
    weights.unlink()
    with pytest.raises(StoreError, match=r"model\.safetensors is missing"):
        store.resolve("demo:v1")


def test_edited_manifest_detected(store: ModelStore, folder: Path) -> None:
    stored = store.import_folder("demo:v1", folder)
    path = stored.path / "model.yaml"
    data = yaml.safe_load(path.read_text())
    data["files"]["model_index.json"]["sha256"] = "0" * 64
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(StoreError, match="manifest_hash"):
        store.resolve("demo:v1")


def test_remove_latest_removes_one_version(store: ModelStore, folder: Path) -> None:
    store.import_folder("demo:v1", folder)
    store.import_folder("demo:v2", folder)
    assert store.remove("demo:latest").ref == ModelRef("demo", "v2")
    assert [str(s.ref) for s in store.list()] == ["demo:v1"]
    store.remove("demo:v1")
    assert store.list() == [] and leftovers(store) == []


# -- archives -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_export_and_import_archive(store: ModelStore, folder: Path, suffix: str) -> None:
    stored = store.import_folder("demo:v1", folder)
    archive = store.export("demo:v1", store.home.parent / f"demo{suffix}")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[0] == "demo-v1/model.yaml"
    assert "demo-v1/unet/diffusion_pytorch_model.safetensors" in names
    copy = store.import_archive(archive, "copy")
    assert copy.ref == ModelRef("copy", "v1")
    assert copy.manifest.files == stored.manifest.files
    assert store.resolve("copy:v1", verify=True).manifest.name == "copy"
    with pytest.raises(StoreError, match="already exists"):
        store.import_archive(archive)
    store.remove("demo:v1")
    assert store.import_archive(archive).ref == ModelRef("demo", "v1")
    assert store.import_archive(archive, "demo:v2").ref == ModelRef("demo", "v2")
    assert list(store.tmp_dir.iterdir()) == []


def _rewrite_tar(src: Path, dst: Path, change: dict[str, bytes | None]) -> None:
    """Copy a tar, replacing (or, with None, dropping) members and adding new ones."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read()
            if member.name in change:
                data = change.pop(member.name)
                if data is None:
                    continue
            member.size = len(data)
            tout.addfile(member, io.BytesIO(data))
        for name, data in change.items():
            info = tarfile.TarInfo(name)
            info.size = len(data or b"")
            tout.addfile(info, io.BytesIO(data or b""))


def test_tampered_archive_refused(store: ModelStore, folder: Path, tmp_path: Path) -> None:
    store.import_folder("demo:v1", folder)
    archive = store.export("demo:v1", tmp_path / "demo.tar")
    store.remove("demo:v1")
    with tarfile.open(archive) as tar:
        original = tar.extractfile("demo-v1/unet/config.json").read()
    same_size = original[:-1] + (b"}" if original[-1:] != b"}" else b" ")
    cases = {
        "changed": {"demo-v1/unet/config.json": same_size},
        "dropped": {"demo-v1/unet/config.json": None},
        "added": {"demo-v1/unet/evil.safetensors": b"extra"},
    }
    for label, change in cases.items():
        bad = tmp_path / f"{label}.tar"
        _rewrite_tar(archive, bad, dict(change))
        with pytest.raises(StoreError, match="does not match its manifest"):
            store.import_archive(bad)
        assert leftovers(store) == [], label


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("m/model.yaml")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_member("../evil.txt"), r"'\.\.'"),
        (_member("m/../../evil.txt"), r"'\.\.'"),
        (_member("/tmp/evil.txt"), "absolute"),
        (_member("m/link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
        (_member("m/link", tarfile.SYMTYPE, "../../outside"), "link"),
        (_member("m/hard", tarfile.LNKTYPE, "/etc/passwd"), "link"),
        (_member("m/fifo", tarfile.FIFOTYPE), "not a regular file"),
    ],
)
def test_unsafe_tar_members_refused(
    store: ModelStore, tmp_path: Path, member: tarfile.TarInfo, message: str
) -> None:
    bad = _tar_with(tmp_path / "bad.tar", member, b"evil")
    with pytest.raises(StoreError, match=message):
        store.import_archive(bad)
    assert not (tmp_path / "evil.txt").exists() and not (store.home / "evil.txt").exists()
    assert leftovers(store) == []


def test_not_an_archive(store: ModelStore, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(StoreError, match="not a readable tar"):
        store.import_archive(junk)
    with pytest.raises(NotFound):
        store.import_archive(tmp_path / "missing.tar")
    with pytest.raises(StoreError, match=r"\.tar or \.tar\.gz"):
        store.export("demo:v1", tmp_path / "demo.zip")
    assert leftovers(store) == []


# -- the hub path -------------------------------------------------------------------------------


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace ``snapshot_download`` by a copy from a local "repo" honouring the patterns."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    repo = make_pipeline_folder(tmp_path / "repo")
    _weights(repo / "unet" / "diffusion_pytorch_model.fp16.safetensors", 4)
    _weights(repo / "text_encoder" / "model.fp16.safetensors", 5)
    (repo / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    (repo / "tokenizer").mkdir()
    (repo / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    state: dict[str, Any] = {"calls": [], "fail": False, "offline": False}

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        state["calls"].append({"repo_id": repo_id, **kwargs})
        if state["offline"]:
            raise OSError("name or service not known")
        local = Path(kwargs["local_dir"])
        files = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
        keep = filter_repo_objects(
            files,
            allow_patterns=kwargs.get("allow_patterns"),
            ignore_patterns=kwargs.get("ignore_patterns"),
        )
        for rel in keep:
            (local / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(repo / rel, local / rel)
            meta = local / ".cache" / "huggingface" / "download" / f"{rel}.metadata"
            meta.parent.mkdir(parents=True, exist_ok=True)
            meta.write_text(f"{'c' * 40}\netag\n0\n")
            if state["fail"]:
                raise OSError("connection reset")
        return str(local)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(store_hub, "offline_reason", lambda timeout=3.0: None)  # it answers
    return state


def test_import_hub_passes_arguments_and_filters_variant(
    store: ModelStore, fake_hub: dict[str, Any]
) -> None:
    stored = store.import_hub(
        "demo:v1", "org/repo", revision="abc123", variant="fp16", token="hf_explicit"
    )
    call = fake_hub["calls"][0]
    assert call["repo_id"] == "org/repo" and call["revision"] == "abc123"
    assert call["token"] == "hf_explicit"
    assert Path(call["local_dir"]).parent == store.tmp_dir
    assert "*.fp16.safetensors" in call["allow_patterns"] and "*.json" in call["allow_patterns"]
    assert "*.bin" in call["ignore_patterns"]
    assert sorted(stored.manifest.files) == [
        "model_index.json",
        "text_encoder/model.fp16.safetensors",
        "tokenizer/merges.txt",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
    ]
    source = stored.manifest.source
    assert source == {
        "type": "hub",
        "repo_id": "org/repo",
        "revision": "abc123",
        "commit": "c" * 40,
    }
    assert stored.manifest.variant == "fp16"
    assert stored.manifest.pipeline_class == "StableDiffusionPipeline"
    assert not (stored.path / ".cache").exists()
    assert store.resolve("demo:v1", verify=True).ref == stored.ref
    assert list(store.tmp_dir.iterdir()) == []


def test_import_hub_include_exclude_and_pickle(store: ModelStore, fake_hub: dict[str, Any]) -> None:
    stored = store.import_hub("demo:v1", "org/repo", include=["*.json"], exclude=["unet/*"])
    assert sorted(stored.manifest.files) == ["model_index.json"]
    call = fake_hub["calls"][0]
    assert call["allow_patterns"] == ["*.json"] and "unet/*" in call["ignore_patterns"]
    with pytest.raises(StoreError, match="--allow-pickle"):
        store.import_hub("demo:v2", "org/repo", include=["*.bin"])
    allowed = store.import_hub("demo:v3", "org/repo", allow_pickle=True)
    assert "unet/diffusion_pytorch_model.bin" in allowed.manifest.files
    assert allowed.manifest.allow_pickle


def test_hub_token_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    env = {"IMPASTO_SECRETS_DIR": str(secrets)}
    assert store_hub.find_token(env) is None
    (secrets / "HF_TOKEN").write_text("hf_from_upper_file\n")
    assert store_hub.find_token(env) == "hf_from_upper_file"
    (secrets / "hf_token").write_text("  hf_from_file \n")
    assert store_hub.find_token(env) == "hf_from_file"
    assert store_hub.find_token({**env, "HF_TOKEN": "hf_from_env"}) == "hf_from_env"
    monkeypatch.setenv("IMPASTO_SECRETS_DIR", str(secrets))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert store_hub.find_token() == "hf_from_file"


def test_import_hub_uses_discovered_token(
    store: ModelStore, fake_hub: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "hf_token").write_text("hf_secret\n")
    monkeypatch.setenv("IMPASTO_SECRETS_DIR", str(secrets))
    store.import_hub("demo:v1", "org/repo", include=["*.json"])
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    store.import_hub("demo:v2", "org/repo", include=["*.json"])
    assert [c["token"] for c in fake_hub["calls"]] == ["hf_secret", "hf_env"]


def test_failed_download_is_kept_and_resumed(store: ModelStore, fake_hub: dict[str, Any]) -> None:
    fake_hub["fail"] = True
    with pytest.raises(StoreError, match="rerunning the same command resumes"):
        store.import_hub("demo:v1", "org/repo")
    first_dir = Path(fake_hub["calls"][0]["local_dir"])
    assert first_dir.is_dir() and any(first_dir.iterdir())  # partial download kept
    assert not store.models_dir.exists() or not any(store.models_dir.iterdir())
    fake_hub["fail"] = False
    stored = store.import_hub("demo:v1", "org/repo")
    assert Path(fake_hub["calls"][1]["local_dir"]) == first_dir
    assert store.resolve(stored.ref, verify=True)
    assert leftovers(store) and list(store.tmp_dir.iterdir()) == []


def test_download_that_fetched_nothing_leaves_nothing(
    store: ModelStore, fake_hub: dict[str, Any]
) -> None:
    fake_hub["offline"] = True
    with pytest.raises(StoreError, match="name or service not known") as err:
        store.import_hub("demo:v1", "org/repo")
    assert "nothing was downloaded and nothing was kept" in err.value.message
    assert "partial" not in err.value.message
    assert leftovers(store) == []


@pytest.mark.parametrize("offline", ["env", "closed port"])
def test_an_unreachable_hub_fails_at_once_saying_what_to_do(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch, offline: str
) -> None:
    import socket

    import huggingface_hub

    calls: list[str] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: calls.append(a))
    if offline == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(StoreError) as err:
        store.import_hub("demo:v1", "org/repo")
    message = err.value.message
    assert "hub is unreachable" in message and "connected machine" in message
    assert calls == []  # no download was attempted, so no retries
    assert leftovers(store) == []


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_round_trip(store: ModelStore, folder: Path, tmp_path: Path) -> None:
    result = cli("import", "demo:v1", str(folder))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "demo:v1"
    result = cli("import", "demo", str(folder), "--verify")
    assert result.exit_code == 0, result.output
    generated = result.stdout.strip()
    assert re.fullmatch(r"demo:\d{8}-\d{6}-[0-9a-f]{4}", generated)

    listed = cli("list")
    assert listed.exit_code == 0 and "demo:v1" in listed.stdout
    assert "StableDiffusionPipeline" in listed.stdout and "KB" in listed.stdout
    rows = json.loads(cli("list", "--json").stdout)
    assert [r["ref"] for r in rows] == ["demo:v1", generated]
    assert rows[0]["pipeline_class"] == "StableDiffusionPipeline" and rows[0]["size"] > 0

    shown = cli("show", "demo:latest")
    assert shown.exit_code == 0
    assert yaml.safe_load(shown.stdout)["version"] == generated.split(":")[1]
    assert json.loads(cli("show", "demo:v1", "--json").stdout)["files"]

    archive = tmp_path / "demo.tar.gz"
    result = cli("export", "demo:v1", str(archive))
    assert result.exit_code == 0 and result.stdout.strip() == str(archive)
    result = cli("import-archive", str(archive), "--name", "copy:v9")
    assert result.exit_code == 0 and result.stdout.strip() == "copy:v9"

    assert cli("rm", "copy:v9", input="n\n").exit_code == 1
    assert store.resolve("copy:v9")
    result = cli("rm", "demo:latest", "--yes")
    assert result.exit_code == 0 and generated in result.stdout
    assert [str(s.ref) for s in store.list()] == ["copy:v9", "demo:v1"]
    assert cli("rm", "copy:v9", input="y\n").exit_code == 0


def test_cli_errors_are_one_line(store: ModelStore, folder: Path) -> None:
    result = cli("show", "nope:v1")
    assert result.exit_code == NotFound.exit_code
    assert "error:" in result.stderr and "impasto models list" in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""

    (folder / "weights.pt").write_bytes(b"pickle")
    result = cli("import", "demo:v1", str(folder))
    assert result.exit_code == StoreError.exit_code
    assert "weights.pt" in result.stderr and "--allow-pickle" in result.stderr
    result = cli("import", "demo:v1", str(folder), "--allow-pickle")
    assert result.exit_code == 0
    assert "warning" in result.stderr and "weights.pt" in result.stderr
    assert yaml.safe_load(cli("show", "demo:v1").stdout)["allow_pickle"] is True

    assert cli("import", "Demo:v2", str(folder)).exit_code == StoreError.exit_code
    assert cli("import", "demo:v2", "no-such-folder").exit_code == StoreError.exit_code
    result = cli("import", "demo:v2", str(folder), "--variant", "fp16")
    assert "only apply to hub imports" in result.stderr
    assert cli("list").exit_code == 0


def test_cli_import_from_hub(store: ModelStore, fake_hub: dict[str, Any]) -> None:
    result = cli(
        "import", "demo:v1", "org/repo", "--revision", "main", "--variant", "fp16",
        "--exclude", "tokenizer/*",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "demo:v1"
    call = fake_hub["calls"][0]
    assert call["revision"] == "main" and "tokenizer/*" in call["ignore_patterns"]
    assert "tokenizer/merges.txt" not in store.resolve("demo:v1").manifest.files


def test_cli_tampered_archive(store: ModelStore, folder: Path, tmp_path: Path) -> None:
    store.import_folder("demo:v1", folder)
    archive = store.export("demo:v1", tmp_path / "demo.tar")
    bad = tmp_path / "bad.tar"
    _rewrite_tar(archive, bad, {"demo-v1/model_index.json": b"{}"})
    result = cli("import-archive", str(bad), "--name", "other")
    assert result.exit_code == StoreError.exit_code
    assert "does not match its manifest" in result.stderr
    assert [str(s.ref) for s in store.list()] == ["demo:v1"]


# -- a real pipeline ----------------------------------------------------------------------------


def test_real_pipeline_loads_from_store(store: ModelStore, sd_folder: Path) -> None:
    from diffusers import DiffusionPipeline

    stored = store.import_folder("sd-micro:v1", sd_folder)
    assert stored.manifest.framework == "diffusers"
    assert stored.manifest.pipeline_class == "StableDiffusionPipeline"
    assert stored.manifest.signatures["text2img"] == {"batchable": True}
    assert "unet/diffusion_pytorch_model.safetensors" in stored.manifest.files
    resolved = store.resolve("sd-micro:latest", verify=True)
    pipe = DiffusionPipeline.from_pretrained(resolved.path)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.tokenizer.model_max_length == 77


def test_python_api_import_model(store: ModelStore, folder: Path) -> None:
    from impasto.diffusers import import_model

    stored = import_model("api-model:v1", folder, home=store.home)
    assert str(stored.ref) == "api-model:v1"
    assert store.resolve("api-model:latest").path == stored.path
    with pytest.raises(StoreError, match="only apply to hub imports"):
        import_model("api-model:v2", folder, home=store.home, revision="main")
    with pytest.raises(StoreError, match="neither a folder nor a hub repo id"):
        import_model("api-model:v3", "/no/such/folder", home=store.home)


def test_files_larger_than_one_read_are_hashed_and_copied_whole(tmp_path):
    import hashlib
    import io

    from impasto.store.files import CHUNK, hash_file, hash_stream

    data = bytes(range(256)) * (CHUNK * 2 // 256 + 3)  # two chunks and a partial third
    path = tmp_path / "weights.safetensors"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert hash_file(path) == expected
    copy = io.BytesIO()
    seen: list[int] = []
    with path.open("rb") as src:
        assert hash_stream(src, copy, seen.append) == (expected, len(data))
    assert copy.getvalue() == data and seen == [CHUNK, CHUNK, len(data) - 2 * CHUNK]
