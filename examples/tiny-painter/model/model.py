"""Serve the tiny painter: a small Stable Diffusion trained on colored shapes.

Everything but ``load()`` comes from :class:`impasto.diffusers.DiffusersModel`, driven by
the ``diffusers:`` section of config.yaml. ``load()`` first imports the pipeline folder
shipped in ``data/pipeline`` into the model store as ``tiny-painter`` (on the first load,
and again whenever the shipped weights change), and checks every file against
``data/SHA256SUMS``, so the served weights come from the store like any other model's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from impasto.diffusers import DiffusersModel
from impasto.errors import NotFound, StoreError

NAME = "tiny-painter"


def read_sums(path: Path, prefix: str = "pipeline/") -> dict[str, str]:
    """``sha256sum`` lines -> {path inside the pipeline folder: sha256}."""
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, rel = line.split(maxsplit=1)
            sums[rel.lstrip("*").removeprefix(prefix)] = digest
    return sums


def import_shipped(store: Any, name: str, data_dir: Path) -> Any:
    """The stored version whose files are exactly the shipped ones, importing it if needed."""
    expected = read_sums(data_dir / "SHA256SUMS")
    try:
        stored = store.resolve(f"{name}:latest")
    except NotFound:
        stored = None
    if stored is not None and _sums(stored) == expected:
        return stored
    logging.getLogger("impasto.diffusers").info(
        "importing %s into the model store at %s (checked against %s)",
        name, store.home, data_dir / "SHA256SUMS",
    )  # fmt: skip
    stored = store.import_folder(name, data_dir / "pipeline")
    if _sums(stored) != expected:
        store.remove(stored.ref)
        raise StoreError(
            f"the files in {data_dir / 'pipeline'} do not match {data_dir / 'SHA256SUMS'}; "
            "restore them with `git checkout`, or retrain with train.py"
        )
    return stored


def _sums(stored: Any) -> dict[str, str]:
    return {rel: entry.sha256 for rel, entry in stored.manifest.files.items()}


class Model(DiffusersModel):
    def load(self) -> None:
        assert self.data_dir is not None
        import_shipped(self.store, NAME, self.data_dir)
        super().load()
