"""The tiny painter example's own modules (scenes, judge, train), importable from tests.

The example folder is not a package (its name has a dash), so its modules are loaded from
their files, once per test session.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from conftest import REPO

EXAMPLE = REPO / "examples" / "tiny-painter"


def example_module(name: str) -> ModuleType:
    """``examples/tiny-painter/{name}.py`` as the module ``tiny_painter_{name}``."""
    qualified = f"tiny_painter_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))  # its modules import each other by plain name
    spec = importlib.util.spec_from_file_location(qualified, EXAMPLE / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
