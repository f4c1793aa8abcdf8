"""Content-addressed versions for staged sources and assembled shard sets.

A version is a hash of (the raw inputs' content, the params that shape the data, the code version). Same inputs
and params give the same version, so a finished version is never rebuilt; change any of them and a new version
appears beside the old one.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

PIPELINES_DIR = Path(__file__).resolve().parent
# Modules that do not shape the data: editing them must not invalidate every shard set.
_NOT_DATA_SHAPING = {"cli.py", "validation.py", "summary.py", "progress.py"}
VERSION_LENGTH = 16


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the data-shaping code in ``pipelines/`` (every .py but the CLI and reporting modules)."""
    h = hashlib.sha256()
    for path in sorted(PIPELINES_DIR.rglob("*.py")):
        if path.name in _NOT_DATA_SHAPING or "__pycache__" in path.parts:
            continue
        h.update(path.relative_to(PIPELINES_DIR).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:VERSION_LENGTH]


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
