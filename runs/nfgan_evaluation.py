"""NFGAN's evaluation on a split's pairs (``runs.nfgan.evaluate_nfgan``): pixel L1 and SSIM against the true
neutral faces, dlib's identity distances, and the pictures (the strip input -> normalized -> true neutral and the
distance histograms of the paper's Fig. 4)."""

from __future__ import annotations

import numpy as np
import torch

from adversarial.nfgan.dlib_identity import SAME_PERSON_THRESHOLD, embed_faces
from figures import grid_png
from figures.histograms import histograms_png
from runs.nfgan_data import SplitPairs, diverse_inputs
from scoring.ssim import ssim


def pixel_scores(inputs: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """L1 (eq. 7 on the [-1, 1] scale) and mean SSIM of the outputs and of the inputs against the true neutrals."""

    def l1(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.float() - b.float()).abs().mean() / 127.5)

    def mean_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(ssim(a[:, 0].numpy(), b[:, 0].numpy()).mean())

    return {
        "l1": l1(outputs, targets),
        "l1_input": l1(inputs, targets),
        "ssim": mean_ssim(outputs, targets),
        "ssim_input": mean_ssim(inputs, targets),
    }


def _first_rows(ids: list[str]) -> dict[str, int]:
    first: dict[str, int] = {}
    for row, value in enumerate(ids):
        first.setdefault(value, row)
    return first


def identity_distances(test: SplitPairs, outputs: torch.Tensor, chosen: list[str]) -> dict[str, np.ndarray]:
    """dlib distances over the pairs of the ``chosen`` inputs: input <-> its output (one per input), input <-> true
    neutral and output <-> true neutral (one per pair), input <-> every neutral face of another person."""
    ids, target_ids = test.input_ids, test.table.column("target_id").to_pylist()
    first_input, first_target = _first_rows(ids), _first_rows(target_ids)
    wanted = set(chosen)
    pair_rows = [r for r, x in enumerate(ids) if x in wanted]
    targets = list(dict.fromkeys(target_ids[r] for r in pair_rows))
    in_rows, t_rows = [first_input[x] for x in chosen], [first_target[t] for t in targets]
    faces = test.pairs
    e_in, e_out = embed_faces(faces.inputs[in_rows].numpy()), embed_faces(outputs[in_rows].numpy())
    e_t = embed_faces(faces.targets[t_rows].numpy())
    k_in, k_t = {x: k for k, x in enumerate(chosen)}, {t: k for k, t in enumerate(targets)}
    pi, pt = [k_in[ids[r]] for r in pair_rows], [k_t[target_ids[r]] for r in pair_rows]
    person_in = np.array([faces.subjects[r] for r in in_rows])
    person_t = np.array([faces.subjects[r] for r in t_rows])
    across = np.linalg.norm(e_in[:, None, :] - e_t[None, :, :], axis=-1)
    return {
        "output": np.linalg.norm(e_in - e_out, axis=1),
        "true_neutral": np.linalg.norm(e_in[pi] - e_t[pt], axis=1),
        "output_to_neutral": np.linalg.norm(e_out[pi] - e_t[pt], axis=1),
        "other_people": across[person_in[:, None] != person_t[None, :]],
    }


def identity_scores(distances: dict[str, np.ndarray]) -> dict[str, float]:
    """Medians and the fractions under dlib's 0.6 threshold; distributions without a value are left out."""
    scores: dict[str, float] = {}
    for what, values in distances.items():
        if not len(values):
            continue
        name = "test_identity_distance" if what == "output" else f"identity_distance_{what}"
        scores[name] = float(np.median(values))
        rate = "same_person_rate" if what == "output" else f"same_person_rate_{what}"
        scores[rate] = float((values < SAME_PERSON_THRESHOLD).mean())
    return scores


def pictures(test: SplitPairs, outputs: torch.Tensor, distances: dict[str, np.ndarray], strip_faces: int) -> dict:
    first = _first_rows(test.input_ids)
    rows = [first[x] for x in diverse_inputs(test.table, strip_faces)]
    faces = test.pairs
    stack = torch.stack([faces.inputs[rows], outputs[rows], faces.targets[rows]], dim=1)  # (rows, 3, 1, H, W)
    labels = [f"{faces.subjects[r]}\n{test.labels[r]}" for r in rows]
    groups = {
        "input <-> normalized output": distances["output"],
        "input <-> true neutral": distances["true_neutral"],
        "normalized output <-> true neutral": distances["output_to_neutral"],
        "input <-> another person's neutral": distances["other_people"],
    }
    return {
        "normalization": grid_png(
            stack.flatten(0, 1).numpy(),
            len(rows),
            3,
            f"NFGAN on held-out people\n{faces.name}",
            labels,
            ["input", "normalized", "true neutral"],
        ),
        "identity_distances": histograms_png(
            groups,
            "dlib embedding distance (L2 of the 128-d descriptors)",
            "identity: dlib's ResNet face embedding on the test pairs (the paper's Fig. 4)",
            SAME_PERSON_THRESHOLD,
            f"dlib's same-person threshold {SAME_PERSON_THRESHOLD}",
        ),
    }
