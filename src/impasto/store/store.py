"""The local model store: versioned model folders under ``$IMPASTO_HOME/models/<name>/<version>/``.

Every write is staged under ``$IMPASTO_HOME/tmp/`` and renamed into place only once the
files are copied, hashed and described by ``model.yaml``, so a version folder either exists
complete or not at all.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import NotFound, StoreError
from . import archive, hub
from .files import (
    MANIFEST_NAME,
    FileEntry,
    ProgressFn,
    copy_files,
    hash_files,
    refuse_pickles,
    rmdir_if_empty,
    source_files,
)
from .manifest import (
    Manifest,
    check_files,
    describe_folder,
    manifest_hash,
    now_iso,
    read_manifest,
    signatures_for,
    write_manifest,
)
from .refs import ModelRef, new_version

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class StoredModel:
    """One model version in the store: its concrete ref, folder and manifest."""

    ref: ModelRef
    path: Path
    manifest: Manifest


def _as_ref(ref: str | ModelRef) -> ModelRef:
    return ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)


class ModelStore:
    """Register, find, verify, export and import model versions on local disk."""

    def __init__(self, home: Path | None = None) -> None:
        if home is None:
            home = Path(os.environ.get("IMPASTO_HOME") or "~/.impasto")
        self.home = Path(home).expanduser()
        self.models_dir = self.home / "models"
        self.tmp_dir = self.home / "tmp"

    # -- registering -------------------------------------------------------------------------

    def import_source(
        self,
        ref: str | ModelRef,
        source: str | Path,
        *,
        revision: str | None = None,
        variant: str | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        token: str | None = None,
        allow_pickle: bool = False,
        force: bool = False,
        progress: ProgressFn | None = None,
    ) -> StoredModel:
        """Import ``source``: an existing folder, else a hub repo id such as ``org/name``."""
        folder = Path(source).expanduser()
        if folder.exists():
            hub_only = {"revision": revision, "variant": variant, "include": include}
            used = [name for name, value in {**hub_only, "exclude": exclude}.items() if value]
            if used:
                raise StoreError(f"{', '.join(used)} only apply to hub imports, not to a folder")
            return self.import_folder(
                ref, folder, allow_pickle=allow_pickle, force=force, progress=progress
            )
        if not _HUB_ID.match(str(source)):
            raise StoreError(
                f"SOURCE {source} is neither a folder nor a hub repo id such as org/name"
            )
        return self.import_hub(
            ref,
            str(source),
            revision=revision,
            variant=variant,
            include=include,
            exclude=exclude,
            token=token,
            allow_pickle=allow_pickle,
            force=force,
            progress=progress,
        )

    def import_folder(
        self,
        ref: str | ModelRef,
        path: Path | str,
        *,
        allow_pickle: bool = False,
        force: bool = False,
        progress: ProgressFn | None = None,
    ) -> StoredModel:
        """Copy a folder (e.g. written by diffusers' ``save_pretrained``) into the store."""
        target = self._new_ref(ref, force)
        source = Path(path).expanduser()
        if not source.is_dir():
            raise NotFound(f"{source} is not a folder; SOURCE is a local folder or a hub repo id")
        files = source_files(source)
        refuse_pickles(files, allow_pickle)
        with self._staging() as staging:
            entries = copy_files(files, staging, progress)
            source_info = {"type": "folder", "path": str(source.resolve())}
            manifest = self._manifest(target, staging, entries, source_info, allow_pickle)
            return self._publish(staging, target, manifest, force)

    def import_hub(
        self,
        ref: str | ModelRef,
        repo_id: str,
        *,
        revision: str | None = None,
        variant: str | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        token: str | None = None,
        allow_pickle: bool = False,
        force: bool = False,
        progress: ProgressFn | None = None,
    ) -> StoredModel:
        """Download a Hugging Face repo snapshot into the store.

        The download folder under ``tmp/`` is named after the request, so rerunning a failed
        import resumes it; it is removed once the import succeeds or fails after downloading.
        """
        target = self._new_ref(ref, force)
        allow, ignore = hub.download_patterns(
            variant=variant, include=include, exclude=exclude, allow_pickle=allow_pickle
        )
        key = json.dumps([repo_id, revision, allow, ignore])
        folder = self.tmp_dir / f"hub-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            hub.download(
                repo_id,
                folder,
                revision=revision,
                allow_patterns=allow,
                ignore_patterns=ignore,
                token=token if token is not None else hub.find_token(),
            )
        except BaseException as exc:
            kept = folder.exists() and any(p.name != ".cache" for p in folder.iterdir())
            if not kept:
                shutil.rmtree(folder, ignore_errors=True)  # nothing worth resuming
            if isinstance(exc, StoreError):
                tail = (
                    f"; the partial download is kept in {folder}, so rerunning the same "
                    "command resumes it"
                    if kept
                    else "; nothing was downloaded and nothing was kept"
                )
                raise StoreError(exc.message + tail) from None
            raise
        with self._staging(folder) as staging:
            commit = hub.downloaded_commit(staging)
            shutil.rmtree(staging / ".cache", ignore_errors=True)
            files = source_files(staging)
            refuse_pickles(files, allow_pickle)
            entries = hash_files(files, progress)
            source_info = {"type": "hub", "repo_id": repo_id, "revision": revision or "main"}
            if commit:
                source_info["commit"] = commit
            manifest = self._manifest(target, staging, entries, source_info, allow_pickle)
            manifest = replace(manifest, variant=variant)
            return self._publish(staging, target, manifest, force)

    def import_archive(
        self, file: Path | str, ref: str | ModelRef | None = None, *, force: bool = False
    ) -> StoredModel:
        """Import an archive written by :meth:`export`, refusing it unless every sha256 matches.

        ``ref`` renames the model; without a version the archive's version is kept.
        """
        file = Path(file).expanduser()
        rename = _as_ref(ref) if ref is not None else None
        with self._staging() as staging:
            root = archive.extract_archive(file, staging)
            manifest = read_manifest(root / MANIFEST_NAME)
            problems = check_files(root, manifest, hashes=True, exact=True)
            if problems:
                raise StoreError(
                    f"archive {file} does not match its manifest ({'; '.join(problems[:5])}); "
                    "it was damaged or changed after export, so it is refused"
                )
            target = ModelRef(manifest.name, manifest.version)
            if rename is not None:
                target = ModelRef(
                    rename.name, target.version if rename.is_latest else rename.version
                )
            if target.is_latest:
                raise StoreError("the archive's version is 'latest', which is reserved")
            manifest = replace(manifest, name=target.name, version=target.version)
            write_manifest(root / MANIFEST_NAME, manifest)
            return self._publish(root, target, manifest, force)

    # -- finding -----------------------------------------------------------------------------

    def list(self) -> builtins.list[StoredModel]:
        """Every stored version, by name and then oldest first; unreadable folders are skipped."""
        found = []
        for name_dir in sorted(self.models_dir.iterdir()) if self.models_dir.is_dir() else ():
            for stored in self._versions(name_dir.name):
                found.append(stored)
        return found

    def locate(self, ref: str | ModelRef) -> StoredModel:
        """Find a version and read its manifest without checking its files."""
        r = _as_ref(ref)
        if r.is_latest:
            versions = self._versions(r.name)
            if not versions:
                raise self._not_found(r)
            return versions[-1]
        path = self.models_dir / r.name / r.version
        if not (path / MANIFEST_NAME).is_file():
            raise self._not_found(r)
        return StoredModel(r, path, read_manifest(path / MANIFEST_NAME))

    def resolve(self, ref: str | ModelRef, verify: bool = False) -> StoredModel:
        """Find a version and check every file's size (and sha256 with ``verify``)."""
        stored = self.locate(ref)
        problems = check_files(stored.path, stored.manifest, hashes=verify)
        if problems:
            more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
            raise StoreError(
                f"model {stored.ref} in {stored.path} is damaged: {'; '.join(problems[:5])}{more}. "
                f"Remove it with `impasto models rm {stored.ref} --yes` and run "
                f"`impasto models import {stored.ref} SOURCE` again"
            )
        return stored

    def is_ref(self, text: str) -> bool:
        """Whether ``text`` names a store model rather than a path or hub repo id.

        ``name:version`` and ``name:latest`` always do; a bare ``name`` only when stored.
        """
        try:
            ref = ModelRef.parse(text)
        except StoreError:
            return False
        return ":" in text or bool(self._versions(ref.name))

    # -- removing and moving -----------------------------------------------------------------

    def remove(self, ref: str | ModelRef) -> StoredModel:
        """Delete one version (``name:latest`` deletes only the newest one)."""
        stored = self.locate(ref)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        trash = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix="rm-")) / "version"
        try:
            os.rename(stored.path, trash)
        except OSError as exc:
            shutil.rmtree(trash.parent, ignore_errors=True)
            raise StoreError(f"cannot remove model {stored.ref} from {stored.path} ({exc})")
        shutil.rmtree(trash.parent, ignore_errors=True)
        rmdir_if_empty(stored.path.parent)
        return stored

    def export(self, ref: str | ModelRef, file: Path | str) -> Path:
        """Write a version folder, manifest included, as a ``.tar`` or ``.tar.gz`` archive."""
        file = Path(file).expanduser()
        archive.archive_mode(file)  # a bad file name fails before any work
        stored = self.resolve(ref)
        prefix = f"{stored.ref.name}-{stored.ref.version}"
        return archive.write_archive(stored.path, stored.manifest.files, file, prefix)

    # -- internals ---------------------------------------------------------------------------

    def _new_ref(self, ref: str | ModelRef, force: bool) -> ModelRef:
        r = _as_ref(ref)
        if r.is_latest:
            if isinstance(ref, str) and ref.strip().endswith(":latest"):
                raise StoreError("'latest' is reserved for the newest version; pick another")
            r = ModelRef(r.name, new_version())
        if not force and (self.models_dir / r.name / r.version).exists():
            raise StoreError(f"model {r} already exists; pass --force to replace it")
        return r

    def _versions(self, name: str) -> builtins.list[StoredModel]:
        folder = self.models_dir / name
        found = []
        for path in folder.iterdir() if folder.is_dir() else ():
            try:
                manifest = read_manifest(path / MANIFEST_NAME)
                found.append(StoredModel(ModelRef(name, path.name), path, manifest))
            except StoreError:
                continue
        return sorted(found, key=lambda s: (s.manifest.created_at, s.ref.version))

    def _not_found(self, ref: ModelRef) -> NotFound:
        return NotFound(
            f"model {ref} is not in the store ({self.models_dir}); see `impasto models list`, "
            f"or add it with `impasto models import {ref.name}:VERSION SOURCE`"
        )

    def _manifest(
        self,
        ref: ModelRef,
        staging: Path,
        files: dict[str, FileEntry],
        source: dict[str, Any],
        allow_pickle: bool,
    ) -> Manifest:
        framework, pipeline_class = describe_folder(staging)
        return Manifest(
            name=ref.name,
            version=ref.version,
            framework=framework,
            pipeline_class=pipeline_class,
            source=source,
            created=now_iso(),
            size=sum(e.size for e in files.values()),
            files=dict(sorted(files.items())),
            signatures=signatures_for(pipeline_class),
            manifest_hash=manifest_hash(files),
            allow_pickle=allow_pickle,
        )

    def _publish(
        self, staging: Path, ref: ModelRef, manifest: Manifest, force: bool
    ) -> StoredModel:
        """Write the manifest and rename the staged folder into place (replacing with force)."""
        write_manifest(staging / MANIFEST_NAME, manifest)
        dest = self.models_dir / ref.name / ref.version
        dest.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if dest.exists():
            if not force:
                raise StoreError(f"model {ref} already exists; pass --force to replace it")
            old = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix="old-")) / "version"
            os.rename(dest, old)
        try:
            os.rename(staging, dest)
        except OSError as exc:
            if old is not None:
                os.rename(old, dest)
            rmdir_if_empty(dest.parent)
            raise StoreError(f"cannot move model {ref} into {dest} ({exc})")
        if old is not None:
            shutil.rmtree(old.parent, ignore_errors=True)
        return StoredModel(ref, dest, manifest)

    @contextmanager
    def _staging(self, folder: Path | None = None) -> Iterator[Path]:
        """A private folder under ``tmp/``, gone afterwards whether or not it was published."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        if folder is None:
            folder = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix="import-"))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
