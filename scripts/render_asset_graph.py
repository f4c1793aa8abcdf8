#!/usr/bin/env python
"""Render emoflow's Dagster asset graph, read from the code (``assets.definitions.build_definitions``), to a picture.

    python scripts/render_asset_graph.py                      # -> docs/asset-graph.svg (the README's picture)
    python scripts/render_asset_graph.py --out graph.png      # PNG (or SVG/PDF, by the suffix)

Nodes are assets, boxed by group (groups left to right in dependency order, the assets of a group in
dependency layers); edges are dependencies; each asset lists its asset checks (blocking ones marked).
Drawn with matplotlib (no Graphviz needed). Each asset's box carries the SVG id ``asset:<key>``
(``<key>`` as Dagster writes it, parts joined by "/"), which tests/test_asset_graph_picture.py reads to keep
the picture in step with the code. The SVG is deterministic: re-rendering an unchanged graph changes nothing.
"""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = PROJECT_ROOT / "docs" / "asset-graph.svg"
NODE_ID_PREFIX = "asset:"

if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))


@dataclass(frozen=True)
class Check:
    name: str
    blocking: bool


@dataclass
class AssetNode:
    key: str  # "a/b" for AssetKey(["a", "b"])
    group: str
    deps: list[str]
    checks: list[Check]
    partitioned: bool = False
    materializable: bool = True
    kinds: list[str] = field(default_factory=list)


@dataclass
class GraphModel:
    nodes: dict[str, AssetNode]  # key -> node
    group_order: list[str]


def key_string(asset_key) -> str:
    return "/".join(asset_key.path)


def graph_model(defs=None) -> GraphModel:
    """The asset graph of ``defs`` (default: the definitions built from the project's params.yaml)."""
    if defs is None:
        from assets.definitions import build_definitions
        from pipelines.params import load_params

        defs = build_definitions(load_params())
    graph = defs.resolve_asset_graph()
    nodes: dict[str, AssetNode] = {}
    for asset_key in graph.get_all_asset_keys():
        node = graph.get(asset_key)
        key = key_string(asset_key)
        nodes[key] = AssetNode(
            key=key,
            group=node.group_name or "default",
            deps=sorted(key_string(k) for k in node.parent_keys if k != asset_key),
            checks=sorted(
                (Check(c.name, bool(graph.get_check_spec(c).blocking)) for c in node.check_keys),
                key=lambda c: c.name,
            ),
            partitioned=bool(node.is_partitioned),
            materializable=bool(node.is_materializable),
            kinds=sorted(node.kinds or []),
        )
    return GraphModel(nodes=dict(sorted(nodes.items())), group_order=_group_order(nodes))


def _layers(keys: list[str], deps: dict[str, list[str]]) -> dict[str, int]:
    """Longest-path layer of each key, counting only dependencies among ``keys`` (cycles broken by order)."""
    layer: dict[str, int] = {}
    visiting: set[str] = set()

    def visit(key: str) -> int:
        if key in layer:
            return layer[key]
        if key in visiting:
            return 0
        visiting.add(key)
        parents = [d for d in deps.get(key, []) if d in keys]
        layer[key] = 1 + max((visit(p) for p in parents), default=-1)
        visiting.discard(key)
        return layer[key]

    for key in sorted(keys):
        visit(key)
    return layer


def _group_order(nodes: dict[str, AssetNode]) -> list[str]:
    layers = group_layers(nodes)
    return sorted(layers, key=lambda g: (layers[g], g))


def group_layers(nodes: dict[str, AssetNode]) -> dict[str, int]:
    """Each group's column: 1 + the column of the groups it depends on (0 for groups depending on none)."""
    groups = sorted({n.group for n in nodes.values()})
    group_deps = {g: set() for g in groups}
    for node in nodes.values():
        for dep in node.deps:
            if dep in nodes and nodes[dep].group != node.group:
                group_deps[node.group].add(nodes[dep].group)
    return _layers(groups, {g: sorted(d) for g, d in group_deps.items()})


# --------------------------------------------------------------------------------------------------- drawing

BOX_W = 3.3  # inches, one asset box
NAME_H = 0.42
CHECK_H = 0.24
PAD = 0.12
COL_GAP = 0.9
ROW_GAP = 0.35
GROUP_PAD = 0.3
GROUP_TITLE_H = 0.4
GROUP_GAP = 0.7
MARGIN = 0.4

_FONT_FALLBACKS = {
    "DejaVu Sans Mono": "Menlo, Consolas, 'Liberation Mono', monospace",
    "DejaVu Sans": "Verdana, 'Liberation Sans', Arial, sans-serif",
}
COLORS = {
    "group_face": "#f5f6fa",
    "group_edge": "#b8bdd6",
    "group_title": "#4f5a8a",
    "box_face": "#ffffff",
    "box_edge": "#4f43dd",
    "source_edge": "#9aa0a6",
    "name": "#1f2328",
    "check": "#2f7d46",
    "muted": "#6b7280",
    "edge": "#6b7280",
}


NAME_CHAR_W = 0.095  # inches per character of an asset name (11 pt DejaVu Sans Mono, bold)
CHECK_CHAR_W = 0.068  # inches per character of a check line (8.5 pt DejaVu Sans)


def _check_label(check: Check) -> str:
    return f"✓ {check.name}" + ("  (blocking)" if check.blocking else "")


def _box_size(node: AssetNode) -> tuple[float, float]:
    tags = 1 if (node.partitioned or not node.materializable) else 0
    height = NAME_H + (len(node.checks) + tags) * CHECK_H + (PAD if node.checks or tags else 0)
    text_w = max([len(node.key) * NAME_CHAR_W] + [len(_check_label(c)) * CHECK_CHAR_W for c in node.checks])
    return max(BOX_W, text_w + 2 * PAD), height


def layout(model: GraphModel) -> tuple[dict[str, tuple[float, float, float, float]], dict[str, tuple], float, float]:
    """Boxes (x, y, w, h; y down from the top) of assets and groups, and the drawing's size in inches.

    Groups stand in columns by their dependencies (a group right of the groups it reads from; groups of one
    column stacked); inside a group, assets stand in columns by their dependency layer within the group."""
    deps = {k: n.deps for k, n in model.nodes.items()}
    # Inside each group: positions relative to the group's top-left corner.
    local: dict[str, dict[str, tuple[float, float, float, float]]] = {}
    group_size: dict[str, tuple[float, float]] = {}
    for group in model.group_order:
        keys = sorted(k for k, n in model.nodes.items() if n.group == group)
        layer = _layers(keys, deps)
        # An asset no other asset of its group reads from stands in the group's last column, next to the
        # group's other outputs (its arrows then leave the group without crossing its boxes).
        last = max(layer.values(), default=0)
        read_in_group = {d for k in keys for d in deps[k] if d in layer}
        for key in keys:
            if key not in read_in_group:
                layer[key] = last
        columns: dict[int, list[str]] = {}
        for key in keys:
            columns.setdefault(layer[key], []).append(key)
        sizes = {key: _box_size(model.nodes[key]) for key in keys}
        x = GROUP_PAD
        bottom = GROUP_TITLE_H
        local[group] = {}
        for col in sorted(columns):
            col_w = max(sizes[k][0] for k in columns[col])
            y = GROUP_TITLE_H + GROUP_PAD
            for key in sorted(columns[col]):
                w, h = sizes[key]
                local[group][key] = (x, y, col_w, h)
                y += h + ROW_GAP
            bottom = max(bottom, y - ROW_GAP)
            x += col_w + COL_GAP
        group_size[group] = (x - COL_GAP + GROUP_PAD, bottom + GROUP_PAD)
    # Groups: columns by group layer, stacked inside a column.
    layers = group_layers(model.nodes)
    boxes: dict[str, tuple[float, float, float, float]] = {}
    group_boxes: dict[str, tuple] = {}
    x = MARGIN
    total_h = 0.0
    for col in sorted(set(layers.values())):
        col_groups = [g for g in model.group_order if layers[g] == col]
        col_w = max(group_size[g][0] for g in col_groups)
        y = MARGIN
        for group in col_groups:
            gw, gh = group_size[group]
            group_boxes[group] = (x, y, col_w, gh)
            for key, (bx, by, bw, bh) in local[group].items():
                boxes[key] = (x + bx, y + by, bw, bh)
            y += gh + GROUP_GAP
        total_h = max(total_h, y - GROUP_GAP)
        x += col_w + GROUP_GAP
    return boxes, group_boxes, x - GROUP_GAP + MARGIN, total_h + MARGIN


def render(model: GraphModel, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    plt.rcParams.update(
        {
            "svg.fonttype": "none",  # text stays text: names are searchable and selectable in the SVG
            "svg.hashsalt": "emoflow-asset-graph",  # stable ids: an unchanged graph renders byte-identical
            "font.family": "DejaVu Sans",
        }
    )
    boxes, group_boxes, width, height = layout(model)
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # y down, like the layout
    ax.axis("off")

    for group, (gx, gy, gw, gh) in group_boxes.items():
        ax.add_patch(
            FancyBboxPatch(
                (gx, gy), gw, gh, boxstyle="round,pad=0,rounding_size=0.12",
                facecolor=COLORS["group_face"], edgecolor=COLORS["group_edge"], linewidth=1.0, gid=f"group:{group}",
            )
        )  # fmt: skip
        ax.text(gx + GROUP_PAD, gy + GROUP_TITLE_H * 0.6, group, fontsize=12, fontweight="bold",
                color=COLORS["group_title"], va="center", ha="left")  # fmt: skip

    for key, node in model.nodes.items():
        for dep in node.deps:
            if dep not in boxes:
                continue
            sx, sy, sw, sh = boxes[dep]
            tx, ty, tw, th = boxes[key]
            rad = 0.0 if abs((sy + NAME_H / 2) - (ty + NAME_H / 2)) < 1e-6 else 0.15
            ax.add_patch(
                FancyArrowPatch(
                    (sx + sw, sy + NAME_H / 2), (tx, ty + NAME_H / 2), arrowstyle="-|>", mutation_scale=14,
                    connectionstyle=f"arc3,rad={rad}", color=COLORS["edge"], linewidth=1.3, shrinkA=2, shrinkB=2,
                    gid=f"edge:{dep}->{key}",
                )
            )  # fmt: skip

    for key, node in model.nodes.items():
        bx, by, bw, bh = boxes[key]
        ax.add_patch(
            FancyBboxPatch(
                (bx, by), bw, bh, boxstyle="round,pad=0,rounding_size=0.08", facecolor=COLORS["box_face"],
                edgecolor=COLORS["box_edge"] if node.materializable else COLORS["source_edge"], linewidth=1.6,
                gid=f"{NODE_ID_PREFIX}{key}",
            )
        )  # fmt: skip
        ax.text(bx + PAD, by + NAME_H / 2, key, fontsize=11, fontweight="bold", family="DejaVu Sans Mono",
                color=COLORS["name"], va="center", ha="left")  # fmt: skip
        y = by + NAME_H
        tags = []
        if node.partitioned:
            tags.append("partitioned")
        if not node.materializable:
            tags.append("source (external)")
        if tags:
            ax.text(bx + PAD, y + CHECK_H / 2, " · ".join(tags), fontsize=8.5, style="italic",
                    color=COLORS["muted"], va="center", ha="left")  # fmt: skip
            y += CHECK_H
        for check in node.checks:
            ax.text(bx + PAD, y + CHECK_H / 2, _check_label(check), fontsize=8.5, color=COLORS["check"], va="center", ha="left",
                    gid=f"check:{key}:{check.name}")  # fmt: skip
            y += CHECK_H

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".svg":
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
        plt.close(fig)
        # Text stays text, drawn by the viewer: name fallbacks for viewers without the DejaVu fonts.
        svg = buffer.getvalue()
        for family, fallback in _FONT_FALLBACKS.items():
            svg = svg.replace(f"font-family: '{family}'", f"font-family: '{family}', {fallback}")
        out.write_text(svg, encoding="utf-8")
    else:
        fig.savefig(out, dpi=150)
        plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"picture to write (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    model = graph_model()
    out = render(model, args.out)
    n_checks = sum(len(n.checks) for n in model.nodes.values())
    print(f"{out}: {len(model.nodes)} assets in {len(model.group_order)} groups, {n_checks} checks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
