"""Content-addressed versions for staged sources and assembled shard sets.

A version is a hash of (the raw inputs' content, the params that shape the data, the code version). Same inputs
and params give the same version, so a finished version is never rebuilt; change any of them and a new version
appears beside the old one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

PIPELINES_DIR = Path(__file__).resolve().parent
# Modules that do not shape the data: editing them must not invalidate every shard set. (params.py types the
# settings; the values that shape the data are hashed into each version themselves.)
_NOT_DATA_SHAPING = {"cli.py", "validation.py", "summary.py", "progress.py", "params.py", "pictures.py"}
VERSION_LENGTH = 16


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def tree_hash(folders, exclude: frozenset[str] = frozenset()) -> str:
    """Hash of the Python source under ``folders`` (relative paths and contents), leaving out files named in
    ``exclude``: the code version of a layer (the data-shaping pipelines, a model family's packages)."""
    h = hashlib.sha256()
    for folder in folders:
        folder = Path(folder)
        for path in sorted(folder.rglob("*.py")):
            if path.name in exclude or "__pycache__" in path.parts:
                continue
            h.update(f"{folder.name}/{path.relative_to(folder).as_posix()}".encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:VERSION_LENGTH]


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the data-shaping code in ``pipelines/`` (every .py but the CLI and reporting modules)."""
    return tree_hash([PIPELINES_DIR], frozenset(_NOT_DATA_SHAPING))


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_raw_inputs(folder: Path) -> str:
    """Hash of every file under a source folder: relative paths and contents (symlinks followed)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            h.update(rel.encode() + b"\0")
            h.update(file_sha256(path).encode() + b"\0")
    return h.hexdigest()


def source_version(source: str, raw_hash: str, shaping: Mapping[str, Any]) -> str:
    return _digest({"source": source, "raw": raw_hash, "shaping": shaping, "code": code_version()})[:VERSION_LENGTH]


def emotionset_version(source_versions: Mapping[str, str], shaping: Mapping[str, Any]) -> str:
    return _digest({"sources": dict(source_versions), "shaping": shaping, "code": code_version()})[:VERSION_LENGTH]
