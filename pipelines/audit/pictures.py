"""The audit's picture: example duplicate groups, one row per group."""

from __future__ import annotations

import numpy as np

from figures import grid_png
from pipelines.labels import EMOTIONS

MEMBERS = 6


def duplicate_groups_png(audit, faces: dict[int, np.ndarray], image_size: tuple[int, int]) -> bytes:
    """One row per example group of ``audit`` (a ``ShardAudit``): its first faces (``faces``: row index -> face),
    labelled with the group's splits, labels and what the policy did; blank tiles where a group has fewer faces."""
    h, w = image_size
    chosen = [g for g in audit.groups if g.group in set(audit.examples)]
    if not chosen:
        blank = np.full((1, 1, h, w), 255, dtype=np.uint8)
        return grid_png(blank, 1, 1, "no duplicate groups in this shard set", row_labels=["none"])
    tiles, labels = [], []
    for g in chosen:
        members = list(g.members[:MEMBERS])
        for m in members:
            tiles.append(faces.get(int(m), np.full((h, w), 255, dtype=np.uint8)))
        tiles.extend(np.full((h, w), 255, dtype=np.uint8) for _ in range(MEMBERS - len(members)))
        kept = sum(audit.decision(m) == "kept" for m in g.members)
        labels.append(
            f"#{g.group} {'identical' if g.exact else 'near'}, {'+'.join(g.splits)}\n"
            f"{'/'.join(EMOTIONS[v][:4] for v in g.labels)}, kept {kept}/{len(g.members)}"
        )
    images = np.stack(tiles)[:, None]
    title = (
        f"duplicate groups: identical, or hash <= {audit.near_distance} bits\nand worst cell <= "
        f"{audit.max_cell_error:g} (splits; labels; kept)"
    )
    return grid_png(images, len(chosen), MEMBERS, title, row_labels=labels)
