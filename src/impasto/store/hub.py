"""The one place impasto talks to the Hugging Face hub: token discovery and snapshot downloads.

``huggingface_hub`` is imported lazily so the store works without the diffusers extra.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from ..errors import NotFound, StoreError
from .files import PICKLE_SUFFIXES, refuse_pickles

DEFAULT_SECRETS_DIR = "/secrets"
TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
TOKEN_FILES = ("hf_token", "HF_TOKEN")
SUPPORT_PATTERNS = ("*.json", "*.txt", "*.model", "*.yaml", "*.md")
"""Configs, tokenizers and model cards: everything a pipeline needs besides its weights."""


def secrets_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("IMPASTO_SECRETS_DIR") or DEFAULT_SECRETS_DIR)


def find_token(env: Mapping[str, str] | None = None) -> str | None:
    """A hub token from ``HF_TOKEN`` or from ``hf_token``/``HF_TOKEN`` in the secrets folder.

    The secrets folder (``$IMPASTO_SECRETS_DIR``, default ``/secrets``) is where mounted
    secrets land in a container, so a deployed server finds its token without env vars.
    """
    env = os.environ if env is None else env
    for key in TOKEN_ENV:
        if value := (env.get(key) or "").strip():
            return value
    folder = secrets_dir(env)
    for name in TOKEN_FILES:
        try:
            value = (folder / name).read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if value:
            return value
    return None


def download_patterns(
    *,
    variant: str | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    allow_pickle: bool = False,
) -> tuple[list[str] | None, list[str] | None]:
    """``(allow_patterns, ignore_patterns)`` for ``snapshot_download``.

    A variant keeps the configs and tokenizers plus only ``*.<variant>.safetensors`` weights;
    without ``allow_pickle`` pickle weights are never downloaded, so a repo that ships both
    formats costs only the safetensors download.
    """
    if not allow_pickle:
        refuse_pickles(include or (), allow_pickle)
    allow: list[str] | None = list(include) if include else None
    if variant:
        weights = [f"*.{variant}.safetensors"]
        if allow_pickle:
            weights += [f"*.{variant}{suffix}" for suffix in PICKLE_SUFFIXES]
        allow = (allow or list(SUPPORT_PATTERNS)) + weights
    ignore = list(exclude or ())
    if not allow_pickle:
        ignore += [f"*{suffix}" for suffix in PICKLE_SUFFIXES]
    return allow, ignore or None


def offline_reason(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached from here (``HF_HUB_OFFLINE``, or no answer within
    ``timeout`` seconds), else None. One quick request instead of a download's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        httpx.head(endpoint, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return f"{endpoint} does not answer ({type(exc).__name__})"
    return None


def download(
    repo_id: str,
    local_dir: Path | None,
    *,
    revision: str | None = None,
    allow_patterns: list[str] | None = None,
    ignore_patterns: list[str] | None = None,
    token: str | None = None,
) -> Path:
    """Download a hub snapshot into ``local_dir`` (None: the Hugging Face cache, where
    ``from_pretrained`` finds it); rerunning with the same folder resumes."""
    try:
        import huggingface_hub
        from huggingface_hub import errors as hf_errors
    except ImportError:
        raise StoreError(
            "importing from the Hugging Face hub needs huggingface_hub: "
            "pip install 'impasto[diffusers]'"
        )
    where = f"{repo_id}@{revision}" if revision else repo_id
    offline = offline_reason()
    if offline is not None:
        raise StoreError(
            f"cannot download {where}: the Hugging Face hub is unreachable ({offline}); run "
            "the import on a connected machine and bring the store over (`impasto models "
            "export` / `import-archive`), or import a folder that holds the model"
        )
    try:
        path = huggingface_hub.snapshot_download(
            repo_id=repo_id,
            revision=revision,
            allow_patterns=allow_patterns,
            ignore_patterns=ignore_patterns,
            local_dir=None if local_dir is None else str(local_dir),
            token=token,
        )
    except hf_errors.GatedRepoError:
        raise StoreError(
            f"hub repo {repo_id} is gated: accept its terms on the hub, then set HF_TOKEN "
            f"or write the token to {secrets_dir() / 'hf_token'}"
        )
    except hf_errors.RepositoryNotFoundError:
        raise NotFound(
            f"hub repo {repo_id} was not found; check the id, or set HF_TOKEN if it is private"
        )
    except hf_errors.RevisionNotFoundError:
        raise NotFound(f"revision {revision!r} of hub repo {repo_id} was not found")
    except Exception as exc:
        reason = " ".join(str(exc).split())
        reason = reason if len(reason) <= 300 else reason[:297] + "..."
        raise StoreError(f"downloading {where} failed ({type(exc).__name__}: {reason})")
    return Path(path)


def downloaded_commit(local_dir: Path) -> str | None:
    """The commit a ``local_dir`` download came from, read from the hub client's metadata."""
    meta = local_dir / ".cache" / "huggingface" / "download"
    for path in sorted(meta.rglob("*.metadata")) if meta.is_dir() else ():
        try:
            commit = path.read_text(encoding="utf-8").split("\n", 1)[0].strip()
        except OSError:
            continue
        if commit:
            return commit
    return None
