"""Serve a tiny random-weight Stable Diffusion; its images are noise.

Everything but ``load()`` comes from :class:`impasto.diffusers.DiffusersModel`, driven by
the ``diffusers:`` section of config.yaml. ``load()`` first makes sure the weights are in
the model store, building them (in well under a second) when they are missing.
"""

from __future__ import annotations

from impasto.diffusers import DiffusersModel, build_tiny_sd, ensure_in_store


class Model(DiffusersModel):
    def load(self) -> None:
        ensure_in_store(self.store, "tiny-sd", build_tiny_sd)  # builds the weights on first load
        super().load()
