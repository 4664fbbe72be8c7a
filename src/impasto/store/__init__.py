"""The local model store: ``name:version`` refs, register, list, verify, export and import.

::

    store = ModelStore()                        # $IMPASTO_HOME/models, default ~/.impasto
    stored = store.import_folder("sd15", "./my-pipeline")
    stored = store.resolve("sd15:latest", verify=True)
    DiffusionPipeline.from_pretrained(stored.path)
"""

from .files import FileEntry, ProgressFn
from .hub import find_token
from .manifest import Manifest, manifest_hash, signatures_for
from .refs import LATEST, ModelRef, new_version
from .store import ModelStore, StoredModel

__all__ = [
    "LATEST",
    "FileEntry",
    "Manifest",
    "ModelRef",
    "ModelStore",
    "ProgressFn",
    "StoredModel",
    "find_token",
    "manifest_hash",
    "new_version",
    "signatures_for",
]
