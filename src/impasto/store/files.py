"""Walking, copying and hashing the files of a model, with a pickle gate in front.

Copying and hashing happen in one pass so a multi-gigabyte import reads each byte once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import StoreError

MANIFEST_NAME = "model.yaml"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
CHUNK = 1 << 20
SKIPPED_DIRS = frozenset({".git", ".cache"})
"""Top-level folders never imported: git metadata and the hub client's download bookkeeping."""

ProgressFn = Callable[[str, int, int], None]
"""Called as ``progress(relpath, bytes_done, bytes_total)`` while files are copied or hashed."""


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


def hash_stream(
    src: IO[bytes], dst: IO[bytes] | None = None, on_bytes: Callable[[int], None] | None = None
) -> tuple[str, int]:
    """Read ``src`` to the end (copying into ``dst``); return ``(sha256, size)``."""
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if dst is not None:
            dst.write(chunk)
        if on_bytes is not None:
            on_bytes(len(chunk))
    return digest.hexdigest(), size


def hash_file(path: Path) -> str:
    with path.open("rb") as f:
        return hash_stream(f)[0]


def pickle_files(paths: Iterable[str]) -> list[str]:
    """The paths whose suffix marks a pickle-based weight file (arbitrary code on load)."""
    return sorted(p for p in paths if p.lower().endswith(PICKLE_SUFFIXES))


def refuse_pickles(paths: Iterable[str], allow_pickle: bool) -> None:
    found = pickle_files(paths)
    if found and not allow_pickle:
        shown = ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
        raise StoreError(
            f"refusing pickle-based weight files ({shown}): loading them can run arbitrary code. "
            "Convert them to safetensors, or pass --allow-pickle if you trust the source"
        )


def source_files(root: Path) -> dict[str, Path]:
    """Relative POSIX path -> file, following symlinks (hub cache snapshots are symlinks)."""
    files: dict[str, Path] = {}
    seen: set[str] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        if Path(folder) == root:
            dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        for name in names:
            path = Path(folder, name)
            files[path.relative_to(root).as_posix()] = path
    if MANIFEST_NAME in files:
        raise StoreError(
            f"{root} already holds a {MANIFEST_NAME}, which the store reserves for its manifest; "
            "to import an exported model use `impasto models import-archive`"
        )
    if not files:
        raise StoreError(f"{root} holds no files to import")
    return files


def _total(files: Mapping[str, Path]) -> int:
    total = 0
    for path in files.values():
        try:
            total += path.stat().st_size
        except OSError:
            raise StoreError(f"cannot read {path}; is it a broken link?")
    return total


def copy_files(
    files: Mapping[str, Path], dest: Path, progress: ProgressFn | None = None
) -> dict[str, FileEntry]:
    """Copy ``files`` under ``dest`` at their relative paths, hashing on the way."""
    total, done = _total(files), 0
    entries = {}
    for rel, src in sorted(files.items()):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)

        def advance(n: int, rel: str = rel) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(rel, done, total)

        try:
            with src.open("rb") as fin, target.open("xb") as fout:
                sha, size = hash_stream(fin, fout, advance)
        except FileNotFoundError:
            raise StoreError(f"{src} disappeared while it was being imported; try again")
        except OSError as exc:
            raise StoreError(f"cannot copy {src} into the store ({exc})")
        entries[rel] = FileEntry(size=size, sha256=sha)
    return entries


def hash_files(
    files: Mapping[str, Path], progress: ProgressFn | None = None
) -> dict[str, FileEntry]:
    """Hash ``files`` where they lie (a download already staged in the store's ``tmp/``)."""
    total, done = _total(files), 0
    entries = {}
    for rel, path in sorted(files.items()):

        def advance(n: int, rel: str = rel) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(rel, done, total)

        try:
            with path.open("rb") as f:
                sha, size = hash_stream(f, None, advance)
        except OSError as exc:
            raise StoreError(f"cannot read {path} ({exc})")
        entries[rel] = FileEntry(size=size, sha256=sha)
    return entries


def rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
