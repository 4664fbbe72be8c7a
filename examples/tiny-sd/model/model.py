"""Serve a tiny random-weight Stable Diffusion; its images are noise.

Everything but ``load()`` comes from :class:`impasto.diffusers.DiffusersModel`, driven by
the ``diffusers:`` section of config.yaml. ``load()`` first makes sure the weights are in
the model store, building them (in well under a second) when they are missing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from impasto.diffusers import DiffusersModel, build_tiny_sd
from impasto.errors import NotFound

REF = "tiny-sd:latest"


class Model(DiffusersModel):
    def load(self) -> None:
        try:
            self.store.resolve(REF)
        except NotFound:
            with tempfile.TemporaryDirectory() as tmp:
                folder = build_tiny_sd(Path(tmp) / "tiny-sd", seed=0)
                self.store.import_folder(REF.split(":")[0], folder)
        super().load()
