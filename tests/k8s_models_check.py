"""Check KServe objects against the typed models of the `kserve` Python SDK, strictly: an
unknown field, or a value of the wrong type, is an error. Kubernetes core types inside them
(``V1Container``, ``V1Volume``...) are left to the Kubernetes JSON schemas, which the tests
apply separately.

Run by the tests with the python of a venv holding `kserve` installed without its
dependencies (its generated model modules need only `six` and `urllib3`): the package's own
``__init__`` (which would pull a model server in) is skipped by registering the package
folder directly. Reads ``[[type, object], ...]`` as JSON on stdin, prints
``[[error, ...], ...]``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import types

PRIMITIVES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
    "datetime": (str,),
    "date": (str,),
}


def _package(name: str) -> None:
    spec = importlib.util.find_spec(name)
    module = types.ModuleType(name)
    module.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = module


_package("kserve")
MODELS = importlib.import_module("kserve.models")


def walk(value, kind: str, path: str, errors: list[str]) -> None:
    if value is None:
        return
    listed = re.fullmatch(r"list\[(.*)\]", kind)
    if listed:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            walk(item, listed.group(1), f"{path}[{i}]", errors)
        return
    mapping = re.fullmatch(r"dict\(([^,]+), (.*)\)", kind)
    if mapping:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return
        for key, item in value.items():
            walk(item, mapping.group(2), f"{path}.{key}", errors)
        return
    if kind in PRIMITIVES:
        wrong_bool = kind in ("int", "float") and isinstance(value, bool)
        if wrong_bool or not isinstance(value, PRIMITIVES[kind]):
            errors.append(f"{path}: expected {kind}, got {type(value).__name__}")
        return
    cls = getattr(MODELS, kind, None)
    if cls is None:  # a Kubernetes core type: the JSON schemas check it
        if not re.fullmatch(r"V\d+(alpha\d+|beta\d+)?[A-Z]\w*", kind):
            errors.append(f"{path}: unknown type {kind}")
        return
    if not isinstance(value, dict):
        errors.append(f"{path}: expected a {kind} object, got {type(value).__name__}")
        return
    fields = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    for key, item in value.items():
        if key not in fields:
            errors.append(f"{path}: unknown field {key!r} for {kind}")
            continue
        walk(item, cls.openapi_types[fields[key]], f"{path}.{key}", errors)


def main() -> None:
    results = []
    for kind, obj in json.load(sys.stdin):
        errors: list[str] = []
        walk(obj, kind, kind, errors)
        results.append(errors)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
