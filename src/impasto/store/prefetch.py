"""Download the weights a package declares, from its config alone (no user code runs).

What ``impasto setup --download-only`` does, and the build step that bakes weights into an
image with nothing but ``config.yaml`` copied in (so a code change keeps that layer):

- every ``model_cache`` entry (``repo_id``, ``revision``, ``allow_patterns``,
  ``ignore_patterns``) into the Hugging Face cache, where ``from_pretrained`` finds it;
- a ``diffusers.model`` that is a hub id, into the same cache (safetensors only unless
  ``allow_pickle``; only the ``variant``'s weights when one is set);
- a SageMaker folder's ``HF_MODEL_ID`` into the model store, where it is served from.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import PackageConfig
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


def prefetch(root: Path, config: PackageConfig) -> list[str]:
    """Download every snapshot ``config`` declares that is not there yet; the repo ids."""
    done = []
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
