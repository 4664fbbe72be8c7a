"""Download the weights a package declares, from its config alone (no user code runs).

What ``impasto setup --download-only`` does, and the build step that bakes weights into an
image with nothing but ``config.yaml`` copied in (so a code change keeps that layer):

- every ``model_cache`` entry (``repo_id``, ``revision``, ``allow_patterns``,
  ``ignore_patterns``) into the Hugging Face cache, where ``from_pretrained`` finds it;
- a ``diffusers.model`` that is a hub id, into the same cache (safetensors only unless
  ``allow_pickle``; only the ``variant``'s weights when one is set);
- a SageMaker folder's ``HF_MODEL_ID`` into the model store, where it is served from;
- Truss's ``external_data`` (``url`` -> ``local_data_path``) into the package's data folder.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import PackageConfig
from ..errors import ConfigError, StoreError
from . import hub

log = logging.getLogger("impasto.store")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Download:
    """One hub snapshot a package needs."""

    repo_id: str
    revision: str | None = None
    allow: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None
    into_store: bool = False  # HF_MODEL_ID: kept in the model store, not the hub cache


def planned(config: PackageConfig, env: dict[str, str] | None = None) -> list[Download]:
    """The downloads ``config`` declares (``env`` adds to its ``environment_variables``)."""
    found: list[Download] = []
    for entry in config.model_cache:
        allow = tuple(entry.allow_patterns) if entry.allow_patterns else None
        ignore = tuple(entry.ignore_patterns) if entry.ignore_patterns else None
        found.append(Download(entry.repo_id, entry.revision, allow, ignore))
    cfg = config.diffusers
    if cfg is not None and _HUB_ID.match(cfg.model) and ":" not in cfg.model:
        allow, ignore = hub.download_patterns(variant=cfg.variant, allow_pickle=cfg.allow_pickle)
        found.append(
            Download(cfg.model, None, tuple(allow) if allow else None, tuple(ignore or ()))
        )
    variables = {**config.environment_variables, **(env or {})}
    if variables.get("HF_MODEL_ID"):
        found.append(
            Download(
                variables["HF_MODEL_ID"],
                variables.get("HF_MODEL_REVISION") or None,
                None,
                None,
                into_store=True,
            )
        )
    return found


def cached(item: Download) -> str | None:
    """The cached snapshot of ``item``, if the Hugging Face cache holds it already."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        return snapshot_download(
            repo_id=item.repo_id,
            revision=item.revision,
            allow_patterns=list(item.allow) if item.allow else None,
            ignore_patterns=list(item.ignore) if item.ignore else None,
            local_files_only=True,
        )
    except Exception:  # not cached (or only partly): download it
        return None


def data_target(root: Path, config: PackageConfig, local_path: str) -> Path:
    """Where an ``external_data`` file goes: ``local_data_path`` under the data folder,
    refused when it would land outside it."""
    data = (root / config.data_dir).resolve()
    target = (data / local_path).resolve()
    if not local_path or not target.is_relative_to(data) or target == data:
        raise ConfigError(
            f"external_data: local_data_path {local_path!r} must name a file inside "
            f"{config.data_dir}/",
            field="external_data.local_data_path",
        )
    return target


def fetch_external_data(root: Path, config: PackageConfig) -> list[str]:
    """Download each ``external_data`` url to its ``local_data_path`` (skipped when the
    file is there), through a ``.partial`` file so an interrupted download never counts."""
    import httpx

    done = []
    for item in config.external_data:
        target = data_target(root, config, item.local_data_path)
        if target.is_file():
            log.info("%s: already in place", target)
            done.append(item.url)
            continue
        log.info("downloading %s to %s", item.url, target)
        started = time.monotonic()
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        try:
            with httpx.stream("GET", item.url, follow_redirects=True, timeout=60) as reply:
                reply.raise_for_status()
                with partial.open("wb") as out:
                    for chunk in reply.iter_bytes(1 << 20):
                        out.write(chunk)
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise StoreError(f"external_data: cannot download {item.url}: {exc}") from None
        partial.replace(target)
        size = target.stat().st_size
        log.info("%s: %.1f MB, %.1f s", item.url, size / 1e6, time.monotonic() - started)
        done.append(item.url)
    return done


def prefetch(root: Path, config: PackageConfig) -> list[str]:
    """Download every snapshot and file ``config`` declares that is not there yet; the repo
    ids and urls."""
    done = fetch_external_data(root, config)
    items = planned(config, dict(os.environ))
    for number, item in enumerate(items, 1):
        where = f"{item.repo_id}@{item.revision}" if item.revision else item.repo_id
        log.info("downloading %s (%d of %d)", where, number, len(items))
        started = time.monotonic()
        cached_at = None if item.into_store else cached(item)
        if cached_at is not None:
            log.info("%s: already in the Hugging Face cache (%s)", where, cached_at)
            done.append(item.repo_id)
            continue
        if item.into_store:
            from ..sagemaker.folder import hub_model_dir

            path = hub_model_dir()
        else:
            path = str(
                hub.download(
                    item.repo_id,
                    None,
                    revision=item.revision,
                    allow_patterns=list(item.allow) if item.allow else None,
                    ignore_patterns=list(item.ignore) if item.ignore else None,
                    token=hub.find_token(),
                )
            )
        size = sum(f.stat().st_size for f in Path(path or ".").rglob("*") if f.is_file())
        log.info("%s: %.1f MB in %s, %.1f s", where, size / 1e6, path, time.monotonic() - started)
        done.append(item.repo_id)
    return done
