"""The Dagster UI in a real browser: `dagster dev -w workspace.yaml` on 127.0.0.1, driven in headless Chromium.

The asset graph must show every asset of ``assets.definitions.defs`` (the list is read from the code, so assets
added later are covered without touching this test); a materialization of the data half (``emotionset_shards``)
launched from the graph must succeed in the UI with all of its checks passed, and leave a shard set under the
test's EMOFLOW_HOME. Screenshots: test-artifacts/browser/dagster-*.png.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from browser_support import base_env, screenshot
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from pipelines.params import PROJECT_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

DATA_ASSET = "emotionset_shards"  # the data half's end asset: stages every enabled source, assembles the shards
RUN_TIMEOUT_MS = 300_000
UI_TIMEOUT_MS = 60_000

# What the graph shows of each asset node. A full node carries the last part of its key in data-tooltip; a
# zoomed-out ("minimal") node shows it middle-truncated to 18 characters (e.g. "trained_fl…ng_name").
_COLLECT_SHOWN = """
  const shown = [];
  for (const fo of document.querySelectorAll('svg foreignObject')) {
    for (const el of fo.querySelectorAll('[data-tooltip]')) shown.push(el.getAttribute('data-tooltip'));
    for (const el of fo.querySelectorAll('[class*="minimalName"]')) shown.push(el.textContent.trim());
  }
"""
_SHOWN_NAMES_JS = "() => {" + _COLLECT_SHOWN + "  return shown;\n}"
# Same rule as _is_shown below, in the page (for wait_for_function): every / some of the wanted names drawn.
_IS_SHOWN = (
    "  const isShown = n => shown.includes(n) || (n.length > 18 && shown.some(s => {"
    "    const i = s.indexOf('…'); if (i < 0) return false;"
    "    const pre = s.slice(0, i), suf = s.slice(i + 1);"
    "    return n.startsWith(pre) && n.endsWith(suf) && pre.length + suf.length < n.length; }));\n"
)
_ALL_SHOWN_JS = "(wanted) => {" + _COLLECT_SHOWN + _IS_SHOWN + "  return wanted.every(isShown);\n}"
_ANY_SHOWN_JS = "(wanted) => {" + _COLLECT_SHOWN + _IS_SHOWN + "  return wanted.some(isShown);\n}"
_MINIMAL_MAX = 18
_COLLAPSED = 'svg foreignObject [class*="collapsedGroupNodeContainer"]'  # a group drawn as one box


@dataclass(frozen=True)
class CodeGraph:
    """The asset graph as the code defines it."""

    keys: tuple[tuple[str, ...], ...]  # asset keys (paths)
    groups: tuple[str, ...]
    checks: dict[tuple[str, ...], tuple[str, ...]]  # asset key -> its check names


_CODE_GRAPH_PY = """
import json, os
from assets.definitions import build_definitions
from pipelines.params import load_params
graph = build_definitions(load_params(os.environ.get("EMOFLOW_PARAMS"))).resolve_asset_graph()
nodes = {k: graph.get(k) for k in graph.get_all_asset_keys()}
print(json.dumps({
    "keys": sorted(k.path for k in nodes),
    "groups": sorted({n.group_name for n in nodes.values() if n.group_name}),
    "checks": [[k.path, sorted(c.name for c in n.check_keys)] for k, n in nodes.items()],
}))
"""


def code_graph(env: dict[str, str]) -> CodeGraph:
    """The graph ``assets.definitions.defs`` (``build_definitions`` on EMOFLOW_PARAMS) defines under ``env`` (the server's: assets may depend on the
    params file), read in a fresh interpreter so that no module imported earlier in this session is reused."""
    proc = subprocess.run(
        [sys.executable, "-c", _CODE_GRAPH_PY], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, f"loading assets.definitions failed:\n{proc.stderr[-5000:]}"
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return CodeGraph(
        keys=tuple(tuple(key) for key in data["keys"]),
        groups=tuple(data["groups"]),
        checks={tuple(key): tuple(names) for key, names in data["checks"]},
    )


def _is_shown(name: str, shown: list[str]) -> bool:
    if name in shown:
        return True
    if len(name) <= _MINIMAL_MAX:
        return False
    for label in shown:
        if "…" in label:
            prefix, _, suffix = label.partition("…")
            if name.startswith(prefix) and name.endswith(suffix) and len(prefix) + len(suffix) < len(name):
                return True
    return False


def missing_from_graph(page: Page, keys) -> list[str]:
    shown = page.evaluate(_SHOWN_NAMES_JS)
    return ["/".join(key) for key in keys if not _is_shown(key[-1], shown)]


def skip_community_dialog(page: Page) -> None:
    """Dagster's first visit on localhost asks to "Join the Dagster community": answer Skip whenever it shows."""
    dialog = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
    page.add_locator_handler(dialog, lambda d: d.get_by_role("button", name="Skip").click())


def expand_all_groups(page: Page, graph: CodeGraph) -> None:
    """With several groups, the graph draws a group as one collapsed box until it is expanded (and remembers
    expansions per browser). Expand them all with the graph's own toggle (⌥E, "Expand all groups" in its
    settings menu), which collapses all first when only some are expanded."""
    wanted = [key[-1] for key in graph.keys]
    # settled: the layout is drawn, as asset nodes (groups remembered expanded) or as collapsed groups
    settled = "(wanted) => ((" + _ANY_SHOWN_JS + ")(wanted) || document.querySelector(" + json.dumps(_COLLAPSED) + "))"
    page.wait_for_function(settled, arg=wanted, timeout=UI_TIMEOUT_MS, polling=250)
    for _ in range(2):
        if page.locator(_COLLAPSED).count() == 0:
            return
        page.locator("svg").first.hover()
        page.keyboard.press("Alt+KeyE")
        all_or_none = (
            "([wanted, n]) => ((" + _ALL_SHOWN_JS + ")(wanted) ||"
            " document.querySelectorAll(" + json.dumps(_COLLAPSED) + ").length === n)"
        )
        try:
            page.wait_for_function(all_or_none, arg=[wanted, len(graph.groups)], timeout=UI_TIMEOUT_MS, polling=250)
        except PlaywrightTimeoutError:
            pass  # the caller's assertion says which assets are missing


_ZOOM_OUT = '[data-svg-viewport] button:has([aria-label="zoom_out"])'  # the graph's own "Zoom out" control
_MAX_ZOOM_OUTS = 12  # a press takes 0.1 off the scale; below 0.15 the graph draws groups only


def zoom_out_until_all_shown(page: Page, graph: CodeGraph) -> None:
    """The graph fits its width, not its height, to the window and draws only the nodes inside the viewport: with
    ~30 assets in three expanded groups most of them are below the window. Zoom out with the graph's own control,
    around the centre, until every asset is drawn (zoomed-out nodes show middle-truncated names, see above)."""
    wanted = [key[-1] for key in graph.keys]
    for _ in range(_MAX_ZOOM_OUTS):
        try:
            page.wait_for_function(_ALL_SHOWN_JS, arg=wanted, timeout=3_000, polling=250)
            return
        except PlaywrightTimeoutError:
            page.locator(_ZOOM_OUT).click()


def open_asset_graph(page: Page, base_url: str, graph: CodeGraph) -> None:
    """From the home page, follow the navigation to the global asset lineage and show every asset."""
    page.goto(base_url + "/")
    page.locator('a[href="/asset-groups"]', has_text=re.compile(r"^\s*Lineage\s*$")).click()
    expect(page).to_have_url(re.compile(r"/asset-groups"), timeout=UI_TIMEOUT_MS)
    expect(page.get_by_text("Global asset lineage")).to_be_visible(timeout=UI_TIMEOUT_MS)
    # Wait for the first nodes to be drawn (the layout is computed in a web worker).
    expect(page.locator("svg foreignObject").first).to_be_attached(timeout=UI_TIMEOUT_MS)
    if len(graph.groups) > 1:
        expand_all_groups(page, graph)
    zoom_out_until_all_shown(page, graph)
    try:
        page.wait_for_function(_ALL_SHOWN_JS, arg=[key[-1] for key in graph.keys], timeout=UI_TIMEOUT_MS, polling=500)
    except PlaywrightTimeoutError:
        pass  # the assertion below says which assets are missing
    missing = missing_from_graph(page, graph.keys)
    assert not missing, f"asset graph does not show {missing} (shown: {page.evaluate(_SHOWN_NAMES_JS)})"
    # Let the nodes' live data (latest event, checks) load before the picture is taken; not an assertion.
    try:
        expect(page.locator("svg foreignObject").get_by_text("Loading...")).to_have_count(0, timeout=20_000)
    except AssertionError:
        pass


def graph_node(page: Page, name: str):
    return (
        page.locator("svg foreignObject")
        .filter(has=page.locator(f'[data-tooltip="{name}"], [class*="minimalName"]:text-is("{name}")'))
        .first
    )


def launch_from_graph(page: Page, asset: str) -> str:
    """Select ``asset`` in the graph, "Materialize selected", confirm if asked; returns the run's path."""
    graph_node(page, asset).click()
    expect(page).to_have_url(re.compile(re.escape(asset)), timeout=UI_TIMEOUT_MS)
    page.get_by_role("button").filter(has_text="Materialize selected").click()
    # Dagster asks "Are you sure?" while upstream partitions are unmaterialized: emotionset_shards stages its
    # sources itself, so confirming is the intended path.
    run_link = page.get_by_role("link", name="View").and_(page.locator('a[href^="/runs/"]'))
    confirm = page.get_by_role("button", name="Confirm")
    expect(confirm.or_(run_link).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    if confirm.is_visible():
        confirm.click()
    expect(run_link.first).to_be_visible(timeout=UI_TIMEOUT_MS)
    return run_link.first.get_attribute("href")


def follow_run(page: Page, base_url: str, run_path: str) -> str:
    """Open the run page and wait until the run's status tag shows a final state; returns it."""
    page.goto(base_url + run_path)
    final = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
    expect(final).to_be_visible(timeout=RUN_TIMEOUT_MS)
    return final.inner_text().strip()


def test_asset_graph_and_data_materialization(dagster_server, page: Page, artifacts_dir: Path):
    base = dagster_server.base_url
    graph = code_graph(base_env(**dagster_server.info))
    skip_community_dialog(page)
    assert (DATA_ASSET,) in graph.keys, f"{DATA_ASSET} is no longer an asset of assets.definitions: {graph.keys}"

    # 1. The asset graph shows every asset the code defines.
    open_asset_graph(page, base, graph)
    screenshot(page, artifacts_dir, "dagster-1-asset-graph")

    # 2. Materialize the data half from the graph and follow the run to its end.
    run_path = launch_from_graph(page, DATA_ASSET)
    status = follow_run(page, base, run_path)
    # The steps' status lists settle a moment after the run's tag; the picture is better with them.
    expect(page.get_by_text(re.compile(r"^Executing \(0\)$"))).to_be_visible(timeout=UI_TIMEOUT_MS)
    screenshot(page, artifacts_dir, "dagster-2-run")
    assert status == "Success", f"run {run_path} ended {status!r}"
    expect(page.get_by_text(re.compile(r"^Errored \(0\)$"))).to_be_visible()

    # 3. Every check the code attaches to the asset ran in that materialization and passed.
    checks = graph.checks[(DATA_ASSET,)]
    assert checks, f"{DATA_ASSET} has no asset checks in the code"
    page.goto(f"{base}/assets/{DATA_ASSET}?view=checks")
    expect(page.get_by_text(f"Checks ({len(checks)})", exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
    check_filter = page.get_by_placeholder("Filter checks")
    for check in checks:
        check_filter.fill(check)  # the list is virtualized: filter, so that the check's row is drawn
        row = page.locator('[class*="checkRow"]').filter(has=page.locator(f'[title="{check}"]'))
        expect(row).to_have_count(1, timeout=UI_TIMEOUT_MS)
        expect(row).to_contain_text("Succeeded", timeout=UI_TIMEOUT_MS)
    check_filter.fill("")
    expect(page.locator('[class*="checkRow"]')).to_have_count(len(checks), timeout=UI_TIMEOUT_MS)
    expect(page.get_by_text("Passed", exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    screenshot(page, artifacts_dir, "dagster-3-asset-checks")

    # 4. Back on the graph, the data half's node shows the materialization.
    open_asset_graph(page, base, graph)
    node = graph_node(page, DATA_ASSET)
    if node.locator(f'[data-tooltip="{DATA_ASSET}"]').count() == 0:
        node.dblclick()  # a zoomed-out graph draws minimal nodes, without status: zoom in on this one
    expect(node).to_contain_text(re.compile(r"Materialized"), timeout=UI_TIMEOUT_MS)
    screenshot(page, artifacts_dir, "dagster-4-asset-graph-after")

    # 5. Outside the browser: the shard set exists where the test's EMOFLOW_HOME says.
    shards_root = Path(dagster_server.info["EMOFLOW_HOME"]) / "shards"
    current = shards_root / "current"
    assert current.is_file(), f"no {current} after the materialization"
    shard_set = shards_root / current.read_text().strip()
    manifest = json.loads((shard_set / "manifest.json").read_text())
    assert manifest["rows"] > 0
    assert set(manifest["by_source"]) == {"jaffe", "ckplus"}, manifest["by_source"]
    assert list(shard_set.rglob("*.parquet")), f"no Parquet files under {shard_set}"
