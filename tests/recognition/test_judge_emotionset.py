"""The judge learns expressions from the real EmotionSet: a narrow judge trained a few hundred CPU steps on the
train split beats the majority class on the subject-independent test split by a justified margin."""

from __future__ import annotations

import numpy as np
import torch

from flowmodels.data import load_shard_split
from pipelines.model_params import AugmentParams, JudgeTrainParams
from recognition.network import build_judge
from recognition.scoring import predict_probabilities
from recognition.training import JudgeTrainer
from training.loop import LoopConfig, run_training

# The fixture's FER2013 rows are all train (the train zip only), so its test split is JAFFE and CK+ faces; the judge
# trains on those sources' train rows: posed faces a narrow judge learns in 300 steps, where FER2013's in-the-wild
# faces take tens of epochs.
SOURCES = ("ckplus", "jaffe")
# Margin over the majority class. The test split is ~100 faces of ~11 people; a judge that learned nothing scores
# the majority rate p ~ 0.24 with a binomial sd of sqrt(p (1 - p) / n) ~ 0.042, so +0.10 is ~2.4 sd above it. This
# configuration measured 0.68, 0.69, 0.37, 0.59, 0.40 (with test-time flip) for seeds 0-4: all above the bar of
# ~0.34, the spread is the subject-level noise of ~11 test people; seed 0, run here, clears it by 0.34.
MARGIN = 0.10


def test_a_few_hundred_steps_beat_the_majority_class(emotionset, tmp_path):
    train_set, val_set, test_set = (
        load_shard_split(emotionset.path, s, sources=SOURCES) for s in ("train", "val", "test")
    )
    assert len(test_set) >= 80 and len(train_set) > 5 * len(test_set)
    cfg = JudgeTrainParams(
        device="cpu",
        seed=0,
        max_steps=300,
        batch_size=32,
        lr=5e-3,
        warmup_steps=20,
        val_every=75,
        checkpoint_every=0,
        log_every=50,
        patience=None,
        augment=AugmentParams(),  # off: in 300 steps augmentation slows learning more than it helps
    )
    judge = build_judge(train_set.image_shape, 7, (8, 16, 32), 0.2, seed=cfg.seed)
    trainer = JudgeTrainer(judge, train_set, val_set, cfg)
    result = run_training(trainer, LoopConfig.from_settings(cfg), tmp_path)
    assert result.steps == 300 and result.skipped_steps == 0

    labels = test_set.labels.numpy()
    majority = max(
        np.bincount(labels, minlength=7).max() / len(labels),  # the best constant answer, knowing the test labels
        float(np.mean(labels == np.bincount(train_set.labels.numpy()).argmax())),  # the train split's majority class
    )
    predicted = predict_probabilities(trainer.final_model(), test_set, batch_size=128, test_time_flip=True).argmax(1)
    accuracy = float(np.mean(predicted == labels))
    assert accuracy >= majority + MARGIN, f"test accuracy {accuracy:.3f}, majority class {majority:.3f}"
    assert len(np.unique(predicted)) >= 4  # it tells several emotions apart, not one class and its neighbour
    torch.testing.assert_close(trainer.final_model().state_dict()["head.weight"], trainer.best_weights["head.weight"])
