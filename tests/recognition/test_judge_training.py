"""JudgeTrainer on real CK+48 faces (16x16, a narrow judge): balanced class weights from the train counts, the loss
against its formula, one step against a hand computation (augmentation and dropout seeded by (seed, step)), exact
resume, early stopping with the best weights kept, the non-finite guard."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from judge_faces import interleaved, shrink

from pipelines.model_params import AugmentParams, JudgeTrainParams
from recognition.network import build_judge
from recognition.scoring import predict_probabilities
from recognition.training import JudgeTrainer, balanced_class_weights, judge_from_checkpoint, judge_loss
from training import TrainingDiverged, load_checkpoint
from training.checkpoints import checkpoint_path
from training.loop import LoopConfig, run_training
from training.seeds import EpochBatches, derive_seed, seeded

SIDE, WIDTHS = 16, (4, 8)


@pytest.fixture(scope="module")
def ck(ck_faces):
    return interleaved(shrink(ck_faces, SIDE))


def small_judge(seed=0, dropout=0.2):
    return build_judge((1, SIDE, SIDE), 7, WIDTHS, dropout, seed=seed)


def params(**changes):
    base = dict(batch_size=32, max_steps=12, warmup_steps=4, val_every=3, checkpoint_every=3, log_every=3, lr=5e-3)
    return JudgeTrainParams(**{"device": "cpu", **base, **changes})


def run(trainer, cfg, folder, **kwargs):
    return run_training(trainer, LoopConfig.from_settings(cfg), folder, **kwargs)


def same_state(a, b) -> bool:
    """Nested dicts/lists of tensors and plain values, compared exactly (tensors bitwise)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    return a == b


def test_balanced_weights_from_hand_made_labels():
    labels = torch.tensor([0, 0, 0, 1, 2, 2])  # n = 6, C = 4, class 3 absent
    weights = balanced_class_weights(labels, 4)
    torch.testing.assert_close(weights, torch.tensor([6 / (4 * 3), 6 / 4, 6 / (4 * 2), 0.0]))
    with pytest.raises(ValueError, match="outside"):
        balanced_class_weights(torch.tensor([0, 5]), 4)


def test_loss_equals_the_weighted_smoothed_cross_entropy_formula():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-2.0, 1.5, 1.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2, 1, 1])
    w = torch.tensor([0.5, 2.0, 1.25])
    eps = 0.1
    log_p = logits.double().log_softmax(1)
    numerator = sum(
        (1 - eps) * w[y] * -log_p[i, y] + eps / 3 * sum(w[c] * -log_p[i, c] for c in range(3))
        for i, y in enumerate(labels.tolist())
    )
    expected = numerator / sum(w[y] for y in labels.tolist())
    assert float(judge_loss(logits, labels, w, eps)) == pytest.approx(float(expected), rel=1e-6)
    plain = -log_p[torch.arange(4), labels].mean()
    assert float(judge_loss(logits, labels, None, 0.0)) == pytest.approx(float(plain), rel=1e-6)


def test_weights_come_from_the_train_counts_only(ck):
    train_set, val_set = ck
    trainer = JudgeTrainer(small_judge(), train_set, val_set, params())
    torch.testing.assert_close(trainer.class_weights, balanced_class_weights(train_set.labels, 7))
    counts = torch.bincount(train_set.labels, minlength=7).double()
    assert counts[0] > 0 and float(trainer.class_weights[0]) == pytest.approx(len(train_set) / (7 * float(counts[0])))
    assert JudgeTrainer(small_judge(), train_set, val_set, params(class_weighting="none")).class_weights is None


def test_one_step_is_the_hand_computed_loss_of_the_seeded_batch(ck):
    train_set, val_set = ck
    cfg = params(seed=3, label_smoothing=0.1, augment=AugmentParams(rotate=(-15, 15), flip=0.5, crop=(0.0, 0.1)))
    model = small_judge(seed=1)
    reference = copy.deepcopy(model).train()
    trainer = JudgeTrainer(model, train_set, val_set, cfg)
    step = 7
    idx = EpochBatches(cfg.seed, len(train_set), cfg.batch_size)(step)
    x = cfg.augment.build()(train_set.images[idx], cfg.seed, step)
    assert not torch.equal(x, train_set.images[idx])  # the augmentation did something
    with seeded(derive_seed(cfg.seed, "dropout", step)), torch.no_grad():
        logits = reference(x)
    weights = balanced_class_weights(train_set.labels, 7)
    expected = float(judge_loss(logits, train_set.labels[idx], weights, 0.1))
    report = trainer.train_step(step)
    assert not report.skipped and report.images == cfg.batch_size
    assert report.losses["loss"] == pytest.approx(expected, rel=1e-6)
    assert report.gauges["lr"] == pytest.approx(cfg.lr)  # step 7 is past the 4 warm-up steps


def test_resume_equals_an_uninterrupted_run(ck, tmp_path):
    train_set, val_set = ck
    cfg = params(max_steps=24, patience=None)  # 24 steps of 32 cross the epoch boundary (741 // 32 = 23)
    straight = JudgeTrainer(small_judge(), train_set, val_set, cfg)
    full = run(straight, cfg, tmp_path / "straight")

    first = JudgeTrainer(small_judge(), train_set, val_set, cfg.replace(max_steps=12))
    half = run(first, cfg.replace(max_steps=12), tmp_path / "resumed")
    assert half.steps == 12 and half.stopped_by == "max_steps"
    second = JudgeTrainer(small_judge(seed=99), train_set, val_set, cfg)  # other weights: all must come from last.pt
    resumed = run(second, cfg, tmp_path / "resumed")

    assert resumed.resumed_from_step == 12 and resumed.steps == full.steps == 24
    assert same_state(straight.state_dict(), second.state_dict())  # model, optimizer, best weights, record: bitwise
    assert straight.best_weights is not None and straight.best_step == second.best_step
    assert [h["loss"] for h in full.history] == [h["loss"] for h in half.history + resumed.history[len(half.history) :]]
    assert full.val_history == resumed.val_history


def test_early_stop_keeps_the_best_validation_weights(ck, tmp_path):
    train_set, val_set = ck
    # At lr 1e-2 the held-out accuracy climbs for ~120 steps and then plateaus (measured: best 0.538 at step 128,
    # stop at 148), so the best validation is neither the first nor the last and the stop must fire.
    cfg = params(max_steps=400, patience=5, val_every=4, checkpoint_every=4, lr=1e-2)
    trainer = JudgeTrainer(small_judge(), train_set, val_set, cfg)
    result = run(trainer, cfg, tmp_path)

    assert result.stopped_by == "early_stop" and result.steps < 400
    accuracies = [v["val_accuracy"] for v in result.val_history]
    best = accuracies.index(max(accuracies))
    assert trainer.best_accuracy == max(accuracies) and best == len(accuracies) - 1 - cfg.patience
    assert best > 0 and max(accuracies) > accuracies[0] + 0.2  # it learned before it stopped
    assert result.steps == trainer.best_step + cfg.patience * cfg.val_every
    best_file = load_checkpoint(checkpoint_path(tmp_path, trainer.best_step))["trainer"]["model"]
    final = trainer.final_model()
    assert not final.training
    assert same_state(final.state_dict(), best_file)  # the weights as they stood at the best validation
    assert not same_state(trainer.model.state_dict(), best_file)  # ... not the last ones
    assert same_state(judge_from_checkpoint(tmp_path / "last.pt").state_dict(), best_file)
    predicted = predict_probabilities(final, val_set, batch_size=64, test_time_flip=False).argmax(1)
    assert float((torch.from_numpy(predicted) == val_set.labels).double().mean()) == pytest.approx(
        trainer.best_accuracy
    )


def test_non_finite_steps_are_skipped_then_stop_with_advice(ck, tmp_path):
    train_set, val_set = ck
    model = small_judge()
    with torch.no_grad():
        model.head.bias[3] = float("nan")  # every logit row NaN: the loss is NaN on every batch
    before = copy.deepcopy(model.state_dict())
    trainer = JudgeTrainer(model, train_set, val_set, params(max_bad_steps=3))
    report = trainer.train_step(0)
    assert report.skipped and "non-finite" in report.detail and math.isnan(report.losses["loss"])
    with pytest.raises(TrainingDiverged, match="lower learning rate"):
        run(trainer, params(max_bad_steps=3), tmp_path)
    after = model.state_dict()
    for name, tensor in before.items():
        if "running" in name or "num_batches" in name:
            continue  # batch norm's statistics move in every forward pass, skipped or not
        assert torch.equal(tensor, after[name]) or (tensor.isnan() == after[name].isnan()).all(), name


def test_checkpoints_of_another_family_are_refused():
    with pytest.raises(ValueError, match="not a judge"):
        judge_from_checkpoint({"kind": "flow", "format": "emoflow-checkpoint/2"})


def test_an_image_size_other_than_the_judges_is_refused(ck):
    train_set, _ = ck
    with pytest.raises(ValueError, match="expects images"):
        JudgeTrainer(build_judge((1, 48, 48), 7, WIDTHS, 0.0), train_set, None, params())


def test_without_validation_the_final_model_is_the_last(ck, tmp_path):
    train_set, _ = ck
    trainer = JudgeTrainer(small_judge(), train_set, None, params(max_steps=4))
    run(trainer, params(max_steps=4), tmp_path)
    assert trainer.best_weights is None and trainer.stop_reason() is None
    assert same_state(trainer.final_model().state_dict(), trainer.model.state_dict())
    assert same_state(judge_from_checkpoint(tmp_path / "last.pt").state_dict(), trainer.model.state_dict())
    assert not F.softmax(trainer.final_model()(train_set.images[:2]), 1).isnan().any()
