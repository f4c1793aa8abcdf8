"""The README's asset-graph picture (docs/asset-graph.svg) shows the asset graph the code defines.

scripts/render_asset_graph.py draws it from ``assets.definitions.build_definitions``; every asset box, check line and
dependency arrow carries an SVG id (``asset:<key>``, ``check:<key>:<name>``, ``edge:<from>-><to>``). The script
must draw every asset of the code, and the committed picture must match the code: when an asset, check or
dependency is added, renamed or removed, re-render it with ``python scripts/render_asset_graph.py``.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from pipelines.params import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "render_asset_graph.py"
PICTURE = PROJECT_ROOT / "docs" / "asset-graph.svg"
STALE = f"{PICTURE.relative_to(PROJECT_ROOT)} is stale: re-render it with `python scripts/render_asset_graph.py`"


def svg_ids(path: Path, prefix: str) -> set[str]:
    root = ET.parse(path).getroot()
    return {el.get("id")[len(prefix) :] for el in root.iter() if (el.get("id") or "").startswith(prefix)}


def code_graph() -> dict[str, set[str]]:
    from assets.definitions import build_definitions
    from pipelines.params import load_params

    defs = build_definitions(load_params())
    graph = defs.resolve_asset_graph()
    keys = {"/".join(k.path) for k in defs.resolve_all_asset_keys()}
    checks = {f"{'/'.join(c.asset_key.path)}:{c.name}" for c in graph.asset_check_keys}
    edges = {
        f"{'/'.join(parent.path)}->{'/'.join(key.path)}"
        for key in graph.get_all_asset_keys()
        for parent in graph.get(key).parent_keys
        if parent != key and parent in graph.get_all_asset_keys()
    }
    return {"asset:": keys, "check:": checks, "edge:": edges}


def render(out: Path) -> Path:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"render_asset_graph.py failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_rendered_graph_has_every_asset_check_and_dependency(tmp_path):
    picture = render(tmp_path / "asset-graph.svg")
    expected = code_graph()
    assert expected["asset:"], "assets.definitions defines no asset"
    for prefix, wanted in expected.items():
        drawn = svg_ids(picture, prefix)
        assert drawn == wanted, f"{prefix} drawn {sorted(drawn)}, code has {sorted(wanted)}"


def test_rendering_is_deterministic(tmp_path):
    first = render(tmp_path / "a.svg").read_bytes()
    assert render(tmp_path / "b.svg").read_bytes() == first


def test_docs_picture_matches_the_code():
    assert PICTURE.is_file(), f"{PICTURE} missing: render it with `python scripts/render_asset_graph.py`"
    for prefix, wanted in code_graph().items():
        drawn = svg_ids(PICTURE, prefix)
        missing, extra = sorted(wanted - drawn), sorted(drawn - wanted)
        assert not missing and not extra, f"{STALE} ({prefix} missing {missing}, no longer in the code {extra})"
