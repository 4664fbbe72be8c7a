"""Per-request LoRA adapters: load once into an LRU cache, apply for one call, always unset.

Loading an adapter costs disk reads and module surgery, so the last ``size`` adapters stay
in the pipeline; applying a cached one is a flag flip. Adapters are switched off in a
``finally`` after every call, so no request ever sees another request's LoRA.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import ImpastoError, InputError
from .pipelines import quiet

Resolver = Callable[[str], tuple[str, Path]]
"""ref -> (identity, path): identity names one exact version (a store ref's concrete version)."""


class LoraCache:
    """The adapters loaded into one pipeline, least recently used first."""

    def __init__(
        self, pipe: Any, size: int, resolve: Resolver, *, allow_pickle: bool = False
    ) -> None:
        self.pipe = pipe
        self.size = size
        self.resolve = resolve
        self.allow_pickle = allow_pickle
        self._names: OrderedDict[str, str] = OrderedDict()  # identity -> adapter name
        self._count = 0
        self.load_seconds = 0.0  # time spent loading in the last apply()

    @property
    def loaded(self) -> list[str]:
        """Identities of the adapters now in the pipeline, least recently used first."""
        return list(self._names)

    @contextlib.contextmanager
    def applied(self, loras: Sequence[tuple[str, float]]) -> Iterator[list[str]]:
        """Activate ``(ref, scale)`` adapters for the block; yields their identities."""
        if not loras:
            yield []
            return
        if not hasattr(self.pipe, "load_lora_weights"):
            raise InputError(
                f"{type(self.pipe).__name__} does not support LoRA adapters", field="loras"
            )
        started = time.perf_counter()
        identities, names = [], []
        try:
            for i, (ref, _) in enumerate(loras):
                identity, name = self._get(ref, field=f"loras.{i}.ref")
                identities.append(identity)
                names.append(name)
            self.load_seconds = time.perf_counter() - started
            self.pipe.enable_lora()
            self.pipe.set_adapters(names, adapter_weights=[float(s) for _, s in loras])
            yield identities
        finally:
            if self._names:
                self.pipe.disable_lora()
            self._trim()

    def _get(self, ref: str, *, field: str) -> tuple[str, str]:
        try:
            identity, path = self.resolve(ref)
        except ImpastoError as exc:
            raise InputError(f"LoRA {ref!r}: {exc.message}", field=field) from None
        if identity in self._names:
            self._names.move_to_end(identity)
            return identity, self._names[identity]
        self._count += 1
        name = f"lora{self._count}_" + re.sub(r"[^A-Za-z0-9_]", "_", identity)[-40:]
        kwargs: dict[str, Any] = {"adapter_name": name}
        if not self.allow_pickle:
            kwargs["use_safetensors"] = True
        if path.is_file():
            kwargs["weight_name"] = path.name
            path = path.parent
        try:
            with quiet():
                self.pipe.load_lora_weights(str(path), **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            with contextlib.suppress(Exception):
                self.pipe.delete_adapters(name)
            raise InputError(f"LoRA {ref!r} cannot be loaded: {exc}", field=field) from None
        self._names[identity] = name
        return identity, name

    def _trim(self) -> None:
        """Delete least recently used adapters beyond ``size``."""
        while len(self._names) > self.size:
            _, name = self._names.popitem(last=False)
            self.pipe.delete_adapters(name)
