"""Write a stored version as a tar archive, and unpack one without trusting its member names.

Archives cross machines, so unpacking treats every member as hostile: only regular files
with plain relative paths are written, each streamed once into the destination.
"""

from __future__ import annotations

import os
import re
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from ..errors import NotFound, StoreError
from .files import MANIFEST_NAME, hash_stream

_DRIVE = re.compile(r"^[A-Za-z]:")


def archive_mode(file: Path) -> str:
    """The tarfile write mode a file name asks for: ``.tar`` or ``.tar.gz``/``.tgz``."""
    name = file.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "w:gz"
    if name.endswith(".tar"):
        return "w"
    raise StoreError(f"cannot tell the archive format of {file}: use a .tar or .tar.gz file name")


def write_archive(root: Path, files: Iterable[str], file: Path, prefix: str) -> Path:
    """Archive ``model.yaml`` and ``files`` (relative to ``root``) under ``prefix/``.

    The manifest goes first so a reader meets it before the weights; the archive is written
    to a ``.partial`` file and renamed, so a failed export never leaves a truncated archive.
    """
    mode = archive_mode(file)
    partial = file.with_name(file.name + ".partial")
    try:
        with tarfile.open(partial, mode) as tar:
            for rel in [MANIFEST_NAME, *sorted(files)]:
                src = root / rel
                info = tarfile.TarInfo(f"{prefix}/{rel}")
                stat = src.stat()
                info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
                with src.open("rb") as f:
                    tar.addfile(info, f)
        os.replace(partial, file)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(f"cannot write archive {file} ({exc})")
    return file


def _member_path(member: tarfile.TarInfo, file: Path) -> str:
    name = member.name
    where = f"archive {file} member {name!r}"
    if member.issym() or member.islnk():
        raise StoreError(
            f"{where} is a link to {member.linkname!r}; impasto archives hold only regular "
            "files, so this archive is refused"
        )
    if not (member.isfile() or member.isdir()):
        raise StoreError(f"{where} is not a regular file or folder; refusing the archive")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise StoreError(f"{where} has an absolute path; refusing the archive")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if ".." in parts or "\\" in name:
        raise StoreError(
            f"{where} would be written outside its folder ('..'); refusing the archive"
        )
    if not parts:
        raise StoreError(f"{where} has an empty path; refusing the archive")
    return "/".join(parts)


def extract_archive(file: Path, dest: Path) -> Path:
    """Unpack ``file`` into the empty folder ``dest``; return the folder holding ``model.yaml``.

    Accepts the layout ``export`` writes (one top folder) and a flat one.
    """
    if not file.is_file():
        raise NotFound(f"archive {file} does not exist")
    base = dest.resolve()
    try:
        with tarfile.open(file, "r:*") as tar:
            for member in tar:
                rel = _member_path(member, file)
                target = dest / rel
                if not target.resolve().is_relative_to(base):
                    raise StoreError(f"archive {file} member {member.name!r} escapes; refusing it")
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is None:
                    raise StoreError(f"archive {file} member {member.name!r} cannot be read")
                try:
                    with src, target.open("xb") as out:
                        hash_stream(src, out)
                except FileExistsError:
                    raise StoreError(f"archive {file} holds {rel} twice; refusing it")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise StoreError(f"{file} is not a readable tar archive ({exc})")
    if (dest / MANIFEST_NAME).is_file():
        return dest
    children = list(dest.iterdir())
    if len(children) == 1 and (children[0] / MANIFEST_NAME).is_file():
        return children[0]
    raise StoreError(
        f"archive {file} holds no {MANIFEST_NAME}; only archives written by "
        "`impasto models export` can be imported"
    )
