"""Evaluation of a tiny flow trained for a few steps on real CK+48 crops (16x16): the numbers are consistent
with each other and every picture is a decodable PNG of a sensible size."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from training_data import ckplus_set, interleaved_split, one_thread  # noqa: F401 (autouse fixture)

from flowmodels import bayes_predict, evaluation
from flowmodels.training import build_seeded_model, train
from pipelines.params import TrainParams
from scoring.classification import classification_metrics, confusion_matrix

TINY = {"levels": 2, "steps": 2, "hidden": 16}
TEMPERATURES = (0.5, 1.0)


@pytest.fixture(scope="module")
def trained(datasets_dir, tmp_path_factory):
    torch.set_num_threads(1)
    train_set, test_set = interleaved_split(ckplus_set(datasets_dir, 16))
    config = TrainParams(batch_size=32, max_steps=30, warmup_steps=5, log_every=5, val_every=15, init_batch=64, lr=3e-3)
    models = {}
    for kind, classes in (("conditional", 7), ("unconditional", None)):
        model = build_seeded_model(0, "glow", (1, 16, 16), classes, **TINY)
        result = train(model, train_set, test_set, config, tmp_path_factory.mktemp(kind))
        models[kind] = (model, result)
    return models, test_set


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # decodes the whole image, not just the header
        return im.size


def test_conditional_model_report(trained):
    models, test_set = trained
    model, result = models["conditional"]
    report = evaluation.evaluate(
        model, test_set, temperatures=TEMPERATURES, samples_per_class=4, history=result.as_dict(), tsne_points=150
    )
    m = report.metrics
    n = len(test_set)
    # bits/dim: both conventions, same noise, agree; far below the 8 bits of a uniform model after training
    assert math.isfinite(m["test_bpd"]) and 0 < m["test_bpd"] < 8
    assert m["test_bpd_bplf"] == pytest.approx(m["test_bpd"], abs=1e-4)
    assert m["n_bits"] == 8 and m["test_images"] == n
    assert m["test_bpd"] == pytest.approx(result.val["val_bpd"], abs=0.05)  # the same images, other noise
    # same noise: p(x) = sum_y p(x|y) / 7 >= p(x|true y) / 7, so the marginal costs at most log2(7)/D bits more
    assert m["test_bpd_marginal"] <= m["test_bpd"] + math.log2(7) / 256 + 1e-6

    # the likelihood classifier: counts, accuracy, recall
    confusion = report.confusion
    assert confusion.shape == (7, 7) and confusion.sum() == n
    support = np.bincount(test_set.labels.numpy(), minlength=7)
    assert confusion.sum(axis=1).tolist() == support.tolist()
    assert 0.0 <= m["accuracy"] <= 1.0
    assert m["accuracy"] == pytest.approx(np.trace(confusion) / n)
    predicted = bayes_predict(model, test_set.images).numpy()
    assert m["accuracy"] == pytest.approx(float((predicted == test_set.labels.numpy()).mean()))
    names = test_set.class_names
    for c, name in enumerate(names):
        if support[c]:
            assert m[f"recall_{name}"] == pytest.approx(confusion[c, c] / support[c])
            assert 0 <= m[f"recall_{name}"] <= 1
        else:  # CK+48 has no neutral faces: no recall to report
            assert f"recall_{name}" not in m
    assert "recall_neutral" not in m
    assert m["balanced_accuracy"] == pytest.approx(np.mean([m[f"recall_{x}"] for x in names if f"recall_{x}" in m]))

    # pictures
    assert set(report.figures) == {"samples_t0.5", "samples_t1.0", "confusion_matrix", "tsne", "transfer", "bpd_curve"}
    sizes = {name: png_size(data) for name, data in report.figures.items()}
    for name, (w, h) in sizes.items():
        assert 200 <= w <= 3000 and 200 <= h <= 3000, (name, w, h)
    w, h = sizes["samples_t0.5"]
    assert h > w  # 7 rows of 4 samples
    w, h = sizes["transfer"]
    assert w > h  # 4 source faces x (input + 5 other emotions)


def test_unconditional_model_report(trained):
    models, test_set = trained
    model, result = models["unconditional"]
    report = evaluation.evaluate(
        model, test_set, temperatures=(0.7,), samples_per_class=3, history=result.history, tsne_points=40
    )
    assert report.confusion is None and "accuracy" not in report.metrics
    assert set(report.figures) == {"samples_t0.7", "tsne", "transfer", "bpd_curve"}
    w, h = png_size(report.figures["samples_t0.7"])
    assert abs(w - h) < 0.5 * max(w, h)  # one square-ish grid
    for data in report.figures.values():
        png_size(data)
    assert report.metrics["test_bpd_bplf"] == pytest.approx(report.metrics["test_bpd"], abs=1e-4)


def test_test_bits_per_dim_is_deterministic_and_batch_independent(trained):
    models, test_set = trained
    model = models["conditional"][0]
    a = evaluation.test_bits_per_dim(model, test_set, batch_size=128, seed=0)
    b = evaluation.test_bits_per_dim(model, test_set, batch_size=37, seed=0)
    c = evaluation.test_bits_per_dim(model, test_set, batch_size=128, seed=1)
    assert a[0] == pytest.approx(b[0], abs=1e-6) and a[1] == pytest.approx(b[1], abs=1e-6)
    assert a[0] == pytest.approx(a[1], abs=1e-4)
    assert a[0] != c[0] and a[0] == pytest.approx(c[0], abs=0.05)  # other noise, nearly the same number


def test_per_image_bits_per_dim_average_to_the_set_figure(trained):
    """The density audit's per-face scores use the same noise as the set's mean: their mean is that figure, and
    each face's value does not depend on the batch it was scored in."""
    from flowmodels.scoring import per_image_bits_per_dim

    models, test_set = trained
    model = models["conditional"][0]
    each = per_image_bits_per_dim(model, test_set, batch_size=128, seed=0)
    assert each.shape == (len(test_set),) and np.isfinite(each).all()
    assert each.mean() == pytest.approx(evaluation.test_bits_per_dim(model, test_set, 128, 0)[0], rel=1e-6)
    assert np.allclose(per_image_bits_per_dim(model, test_set, batch_size=37, seed=0), each, rtol=1e-5)


def test_sample_grids_are_reproducible(trained):
    models, test_set = trained
    model = models["conditional"][0]
    one = evaluation.sample_grid(model, 0.7, 3, test_set.class_names, seed=5)
    two = evaluation.sample_grid(model, 0.7, 3, test_set.class_names, seed=5)
    assert one == two
    assert evaluation.sample_grid(model, 0.7, 3, test_set.class_names, seed=6) != one


def test_classification_metrics_by_hand():
    confusion = np.array([[3, 1, 0], [0, 0, 0], [2, 0, 4]])
    metrics = classification_metrics(confusion, ("a", "b", "c"))
    assert metrics["accuracy"] == pytest.approx(0.7)
    assert metrics["recall_a"] == pytest.approx(0.75) and metrics["recall_c"] == pytest.approx(4 / 6)
    assert "recall_b" not in metrics
    assert metrics["balanced_accuracy"] == pytest.approx((0.75 + 4 / 6) / 2)
    assert confusion_matrix(np.array([0, 2, 2]), np.array([0, 0, 2]), 3).tolist() == [[1, 0, 0], [0, 0, 0], [1, 0, 1]]
