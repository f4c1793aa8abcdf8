"""``StageProgress``: what the CLI's bar and Dagster's log show of a job of named stages (an evaluation)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from flowmodels import build_model
from flowmodels.data import ImageSet
from flowmodels.evaluation import STAGES, evaluate
from pipelines.labels import CKPLUS_LABELS, EMOTION_INDEX, EMOTIONS
from pipelines.params import load_params
from runs.context import RunContext, StageProgress


def ckplus_faces(datasets_dir, n: int) -> ImageSet:
    """The first ``n`` CK+48 crops of the 7-emotion scheme, block-averaged to 8x8 (a flow of one step)."""
    images, labels = [], []
    for folder in sorted(p for p in (datasets_dir / "ckplus48" / "CK+48").iterdir() if p.is_dir()):
        if CKPLUS_LABELS[folder.name] not in EMOTION_INDEX:  # contempt
            continue
        for png in sorted(folder.glob("*.png"))[: -(-n // 6)]:
            with Image.open(png) as im:
                images.append(np.asarray(im.convert("L"), dtype=np.float64).reshape(8, 6, 8, 6).mean(axis=(1, 3)))
            labels.append(EMOTION_INDEX[CKPLUS_LABELS[folder.name]])
    pixels = torch.from_numpy(np.rint(np.stack(images)[:n, None]).astype(np.uint8))
    return ImageSet(pixels, torch.tensor(labels[:n]), "ckplus48/8x8", EMOTIONS)


def context(tmp_path, name: str, **kwargs) -> RunContext:
    logger = logging.getLogger(f"test.progress.{name}")
    logger.setLevel(logging.INFO)
    return RunContext.create(
        load_params(), tmp_path, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", logger=logger, **kwargs
    )


def messages(caplog, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == f"test.progress.{name}"]


def test_log_lines_at_each_stage_start_and_end_and_throttled_between(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    progress = context(tmp_path, "throttled", log_every_s=3600.0).stage_progress("evaluate glow")
    for done in range(4):
        progress("bits/dim", done, 3)
    progress("samples", 0, 7)
    progress("samples", 3, 7)
    progress("classification", 1, 5)  # a caller that counts whole stages reads too
    progress.close()
    lines = messages(caplog, "throttled")
    assert [line.split(",")[0] for line in lines] == [
        "evaluate glow: bits/dim 0/3 (0%)",
        "evaluate glow: bits/dim 3/3 (100%)",
        "evaluate glow: samples 0/7 (0%)",
        "evaluate glow: classification 1/5 (20%)",
    ]
    assert lines[-1].endswith("s left")  # a stage under way says about how long it has left


def test_every_report_logged_without_throttling(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    progress = context(tmp_path, "every", log_every_s=0.0).stage_progress("job")
    for done in range(3):
        progress("t-SNE", done, 2)
    assert len(messages(caplog, "every")) == 3


def test_the_terminal_bar_follows_the_stage(tmp_path):
    progress = context(tmp_path, "bar", progress_bars=True).stage_progress("evaluate bplf")
    progress("bits/dim", 0, 30)
    progress("bits/dim", 12, 30)
    assert progress.bar.n == 12 and progress.bar.total == 30 and "bits/dim" in progress.bar.desc
    progress("transfer", 1, 9)  # a new stage restarts the bar (its rate and ETA are the stage's)
    assert progress.bar.n == 1 and progress.bar.total == 9 and progress.bar.desc == "evaluate bplf: transfer"
    progress.close()
    assert progress.bar is None


def test_an_evaluation_logs_every_stage_to_completion(tmp_path, caplog, datasets_dir):
    caplog.set_level(logging.INFO)
    images = ckplus_faces(datasets_dir, 40)
    torch.manual_seed(0)
    model = build_model("glow", (1, 8, 8), 7, levels=1, steps=1, hidden=8)
    model.initialize(images.images, images.labels)
    progress = context(tmp_path, "evaluate", log_every_s=3600.0).stage_progress("evaluate glow")
    assert isinstance(progress, StageProgress)
    try:
        evaluate(
            model, images, temperatures=(1.0,), samples_per_class=2, tsne_points=20, batch_size=35, progress=progress
        )
    finally:
        progress.close()
    lines = messages(caplog, "evaluate")
    for stage in STAGES:
        mine = [line for line in lines if line.startswith(f"evaluate glow: {stage} ")]
        assert mine[0].startswith(f"evaluate glow: {stage} 0/"), (stage, mine)
        assert "(100%)" in mine[-1], (stage, mine)
    bits = [line for line in lines if line.startswith("evaluate glow: bits/dim")]
    assert bits[-1].startswith("evaluate glow: bits/dim 8/8 (100%)")  # 40 images, 5 a call of 35 rows


@pytest.mark.parametrize("elapsed, expected", [(10.0, "bits/dim 1/4 (25%), 10 s, about 30 s left")])
def test_line_format(elapsed, expected):
    assert StageProgress.line("bits/dim", 1, 4, elapsed) == expected
