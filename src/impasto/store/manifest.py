"""The ``model.yaml`` manifest kept beside every stored model version.

The manifest records what the store copied (each file's size and sha256) so later loads,
exports and archive imports can prove the files are still the ones that were imported.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from ..errors import StoreError
from .files import MANIFEST_NAME, FileEntry, hash_file

_DIFFUSION_TASKS = {
    "text2img": {"batchable": True},
    "img2img": {"batchable": True},
    "inpaint": {"batchable": True},
}
_SIGNATURES: dict[str, dict[str, dict[str, Any]]] = {
    **{
        cls: _DIFFUSION_TASKS
        for cls in (
            "StableDiffusionPipeline",
            "StableDiffusionImg2ImgPipeline",
            "StableDiffusionInpaintPipeline",
            "StableDiffusionXLPipeline",
            "StableDiffusionXLImg2ImgPipeline",
            "StableDiffusionXLInpaintPipeline",
        )
    },
    "StableVideoDiffusionPipeline": {"img2vid": {"batchable": False}},
}


@dataclass(frozen=True)
class Manifest:
    """What ``model.yaml`` holds; ``files`` maps a POSIX relative path to its size and hash."""

    name: str
    version: str
    framework: str
    pipeline_class: str | None
    source: dict[str, Any]
    created: str
    size: int
    files: dict[str, FileEntry]
    signatures: dict[str, dict[str, Any]] = field(default_factory=dict)
    manifest_hash: str = ""
    allow_pickle: bool = False
    variant: str | None = None

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(self.created)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = {path: asdict(entry) for path, entry in sorted(self.files.items())}
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        try:
            files = {
                str(path): FileEntry(size=int(e["size"]), sha256=str(e["sha256"]))
                for path, e in (data.get("files") or {}).items()
            }
            return cls(
                name=str(data["name"]),
                version=str(data["version"]),
                framework=str(data.get("framework") or "files"),
                pipeline_class=data.get("pipeline_class"),
                source=dict(data.get("source") or {}),
                created=str(data["created"]),
                size=int(data.get("size") or 0),
                files=files,
                signatures=dict(data.get("signatures") or {}),
                manifest_hash=str(data.get("manifest_hash") or ""),
                allow_pickle=bool(data.get("allow_pickle", False)),
                variant=data.get("variant"),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"the model manifest is malformed ({exc!r})") from None


def manifest_hash(files: Mapping[str, FileEntry | Mapping[str, Any]]) -> str:
    """sha256 of the canonical JSON of the files table: one value that pins every file."""
    table = {}
    for path, entry in files.items():
        e = asdict(entry) if isinstance(entry, FileEntry) else entry
        table[path] = {"sha256": str(e["sha256"]), "size": int(e["size"])}
    canonical = json.dumps(table, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def signatures_for(pipeline_class: str | None) -> dict[str, dict[str, Any]]:
    """The tasks a pipeline class serves and whether each can be batched; ``{}`` if unknown."""
    return {task: dict(sig) for task, sig in _SIGNATURES.get(pipeline_class or "", {}).items()}


def describe_folder(root: Path) -> tuple[str, str | None]:
    """``(framework, pipeline_class)``: a ``model_index.json`` marks a diffusers pipeline."""
    index = root / "model_index.json"
    if not index.is_file():
        return "files", None
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"model_index.json is not valid JSON ({exc}); is the folder complete?")
    name = data.get("_class_name") if isinstance(data, dict) else None
    return "diffusers", str(name) if name else None


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def read_manifest(path: Path) -> Manifest:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise StoreError(f"cannot read the model manifest {path} ({exc})") from None
    if not isinstance(data, dict):
        raise StoreError(f"the model manifest {path} is not a mapping")
    try:
        return Manifest.from_dict(data)
    except StoreError as exc:
        raise StoreError(f"{exc.message}: {path}") from None


def write_manifest(path: Path, manifest: Manifest) -> None:
    path.write_text(yaml.safe_dump(manifest.to_dict(), sort_keys=False), encoding="utf-8")


def check_files(root: Path, manifest: Manifest, *, hashes: bool, exact: bool = False) -> list[str]:
    """Every way the files under ``root`` differ from ``manifest``; ``[]`` when they match.

    ``hashes`` reads every byte; ``exact`` also reports files the manifest does not list.
    """
    problems = []
    if manifest.manifest_hash != manifest_hash(manifest.files):
        problems.append("the files table does not match manifest_hash (model.yaml was edited)")
    for rel, entry in sorted(manifest.files.items()):
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
            continue
        size = path.stat().st_size
        if size != entry.size:
            problems.append(f"{rel} is {size} bytes, expected {entry.size}")
        elif hashes and hash_file(path) != entry.sha256:
            problems.append(f"{rel} has sha256 that differs from the manifest")
    if exact:
        present = {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}
        present.discard(MANIFEST_NAME)
        problems.extend(
            f"{rel} is not in the manifest" for rel in sorted(present - set(manifest.files))
        )
    return problems
