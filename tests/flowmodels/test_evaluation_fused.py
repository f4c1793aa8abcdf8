"""Evaluation's fused passes give the numbers of the straightforward computation (one ``model.bits_per_dim``
call per convention and label, ``bayes_log_posterior``'s c passes, ``model.encode`` for the t-SNE), and every
stage reports its progress. Tiny flows (16x16, 2 levels x 2 steps) on real CK+48 crops; their parameters are
perturbed after the data-dependent initialisation so the classes differ (a freshly built conditional flow
ignores its label: every label shift starts at zero)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from training_data import ckplus_set, one_thread  # noqa: F401 (autouse fixture)

from flowmodels import bayes_log_posterior, build_model, class_mean_latents
from flowmodels.data import ImageSet
from flowmodels.evaluation import STAGES, evaluate, reference_latent_means, reference_pick
from flowmodels.scoring import (
    class_log_likelihoods,
    classify,
    classify_and_encode,
    dataset_bits_per_dim,
    density_scores,
    inference_convolutions,
    noisy_batches,
)
from flowmodels.winograd import WinogradConv3x3

TINY = {"levels": 2, "steps": 2, "hidden": 16}


def perturbed_model(variant: str, classes: int | None, images: ImageSet) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(variant, (1, 16, 16), classes, **TINY)
    model.initialize(images.images[:64], images.labels[:64] if classes else None)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def faces(datasets_dir) -> ImageSet:
    full = ckplus_set(datasets_dir, 16)
    pick = torch.randperm(len(full), generator=torch.Generator().manual_seed(0))[:75].sort().values
    return full.subset(pick, "ckplus48/sample")


@pytest.fixture(scope="module", params=["glow", "bplf_3x3"])
def conditional(request, faces):
    return perturbed_model(request.param, 7, faces)


def straightforward_bits(model, images: ImageSet, batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """Per image, the old way: one ``bits_per_dim`` call per convention, labels as given, and the label
    marginal (``y=None``), with the evaluation noise."""
    out = {"standard": [], "bplf": [], "marginal": []}
    for _, x, y, u in noisy_batches(images, batch_size, seed, "cpu", True):
        with torch.inference_mode():
            out["standard"].append(model.bits_per_dim(x, y, noise=u, convention="standard"))
            out["bplf"].append(model.bits_per_dim(x, y, noise=u, convention="bplf"))
            out["marginal"].append(model.bits_per_dim(x, None, noise=u, convention="standard"))
    return {k: torch.cat(v).double().numpy() for k, v in out.items()}


def test_batched_class_passes_equal_one_pass_per_class(conditional, faces):
    x = conditional._continuous(faces.images[:9])
    keep = torch.zeros(9, dtype=torch.bool)
    keep[[1, 4]] = True
    with torch.inference_mode():
        batched, kept = class_log_likelihoods(conditional, x, keep)
        per_class = conditional.class_log_probs(x)
        assert torch.allclose(batched, per_class, rtol=1e-6, atol=1e-3)
        assert batched.shape == (9, 7) and not torch.allclose(batched[:, 0], batched[:, 3])  # the label matters
        for level, z in enumerate(kept):
            assert z.shape == (2, 7, *conditional.flow.latent_shapes[level])
            assert torch.allclose(z[1, 5], conditional.encode(x[4:5], 5)[level][0], atol=1e-5)


@pytest.mark.parametrize("batch_size", [128, 20])
def test_density_scores_equal_the_per_convention_and_marginal_calls(conditional, faces, batch_size):
    fused = density_scores(conditional, faces, batch_size, seed=3)
    old = straightforward_bits(conditional, faces, batch_size, seed=3)
    for key in ("standard", "bplf", "marginal"):
        assert fused[key] == pytest.approx(old[key].mean(), rel=1e-5), key
    assert fused["standard"] != pytest.approx(fused["marginal"], rel=1e-6)  # the two really differ
    # the per-call figures, now also one pass for both conventions
    assert dataset_bits_per_dim(conditional, faces, 128, 3)["bplf"] == pytest.approx(old["bplf"].mean(), rel=1e-5)
    marginal = dataset_bits_per_dim(conditional, faces, 128, 3, ("standard",), marginal=True)["standard"]
    assert marginal == pytest.approx(fused["marginal"], rel=1e-5)


def test_density_scores_of_unconditional_and_unlabelled_sets(faces):
    model = perturbed_model("glow", None, faces)
    fused = density_scores(model, faces, 32, seed=0)
    assert set(fused) == {"standard", "bplf"}
    assert fused["standard"] == pytest.approx(dataset_bits_per_dim(model, faces, 128, 0)["standard"], rel=1e-6)
    conditional = perturbed_model("glow", 7, faces)
    unlabelled = ImageSet(faces.images, None, "unlabelled", None)
    scores = density_scores(conditional, unlabelled, 64, seed=0)
    assert set(scores) == {"standard", "bplf"}  # the label marginal is the set's bits/dim then
    assert scores["standard"] == pytest.approx(density_scores(conditional, faces, 64, seed=0)["marginal"], rel=1e-6)


def test_classification_and_latents_equal_bayes_rule_and_encode(conditional, faces):
    log_prior = torch.log(torch.tensor([0.3, 0.05, 0.1, 0.2, 0.15, 0.1, 0.1]))
    keep = torch.tensor([0, 7, 30, 74])
    result = classify_and_encode(conditional, faces, 50, log_prior, keep)
    with torch.inference_mode():
        old = bayes_log_posterior(conditional, faces.images, log_prior)
        encoded = conditional.encode(faces.images[keep], faces.labels[keep])
    assert (result.predicted == old.argmax(1).numpy()).all()
    assert len(np.unique(result.predicted)) > 1  # not a constant classifier: the comparison can fail
    assert np.allclose(result.posteriors, old.exp().double().numpy(), atol=1e-5)
    assert np.allclose(result.posteriors.sum(1), 1.0, atol=1e-5)
    flat = torch.cat([z.flatten(1) for z in encoded], dim=1).numpy()
    assert result.latents.shape == flat.shape and np.allclose(result.latents, flat, atol=1e-5)
    assert (result.latent_labels == faces.labels[keep].numpy()).all()
    predicted, posteriors = classify(conditional, faces, 128)  # uniform prior: bayes_log_posterior's default
    with torch.inference_mode():
        assert (predicted == bayes_log_posterior(conditional, faces.images).argmax(1).numpy()).all()
    # an unlabelled set: the latents under the predicted label
    unlabelled = ImageSet(faces.images, None, "unlabelled", None)
    found = classify_and_encode(conditional, unlabelled, 128, None, keep)
    assert (found.latent_labels == predicted[keep.numpy()]).all()
    with torch.inference_mode():
        again = conditional.encode(faces.images[keep], torch.from_numpy(found.latent_labels))
    assert np.allclose(found.latents, torch.cat([z.flatten(1) for z in again], dim=1).numpy(), atol=1e-5)


def test_direct_convolutions_in_inference_give_the_winograd_numbers(faces):
    model = perturbed_model("bplf_3x3", 7, faces)
    winograd = [m for m in model.modules() if isinstance(m, WinogradConv3x3)]
    assert winograd and all(m.enabled for m in winograd)
    with torch.inference_mode():
        x = model._continuous(faces.images[:20])
        before = model.class_log_probs(x)
        with inference_convolutions(model):
            assert not any(m.enabled for m in winograd)
            direct = model.class_log_probs(x)
    assert all(m.enabled for m in winograd)  # restored
    assert torch.allclose(before, direct, rtol=1e-5, atol=1e-3)


def test_reference_means_with_and_without_a_cap(faces):
    model = perturbed_model("glow", 7, faces)
    everything = reference_latent_means(model, faces, 7, None, seed=0, batch_size=16)
    with torch.inference_mode():
        plain = class_mean_latents(model, faces.images, faces.labels, 7, 16)
    assert everything.counts == plain.counts
    for c in range(7):
        for mine, theirs in zip(
            everything.class_means[c] + everything.other_means[c], plain.class_means[c] + plain.other_means[c]
        ):
            assert torch.allclose(mine, theirs, atol=1e-5)
    pick = reference_pick(faces.labels, 7, 3, seed=0)
    drawn = torch.bincount(faces.labels[pick], minlength=7)
    full = torch.bincount(faces.labels, minlength=7)
    assert (drawn == torch.clamp(full, max=3)).all() and (pick.diff() > 0).all()
    capped = reference_latent_means(model, faces, 7, 3, seed=0, batch_size=16)
    assert capped.counts == full.tolist()  # the full counts: direction() refuses the same classes
    with torch.inference_mode():
        sub = class_mean_latents(model, faces.images[pick], faces.labels[pick], 7, 16)
    target = int(full.argmax())
    for mine, theirs in zip(capped.class_means[target], sub.class_means[target]):
        assert torch.allclose(mine, theirs, atol=1e-5)
    # z_avg^other: the drawn class means weighted by the full class counts
    others = [c for c in range(7) if c != target and full[c] > 0]
    expected = sum(sub.class_means[c][0] * full[c] for c in others) / sum(full[c] for c in others)
    assert torch.allclose(capped.other_means[target][0], expected, atol=1e-5)


def record(calls: list):
    return lambda stage, done, total: calls.append((stage, done, total))


def check_progress(calls: list, expected_stages: list[str]) -> None:
    order = list(dict.fromkeys(stage for stage, _, _ in calls))
    assert order == expected_stages
    for stage in expected_stages:
        mine = [(done, total) for s, done, total in calls if s == stage]
        totals = {total for _, total in mine}
        assert len(totals) == 1, (stage, mine)
        total = totals.pop()
        counts = [done for done, _ in mine]
        assert counts[0] == 0 and counts[-1] == total > 0, (stage, mine)
        assert all(b >= a for a, b in zip(counts, counts[1:])), (stage, mine)
    # each stage's calls are contiguous: stages do not interleave
    runs = [stage for i, (stage, _, _) in enumerate(calls) if i == 0 or calls[i - 1][0] != stage]
    assert runs == expected_stages


def test_evaluate_reports_every_stage_and_keeps_the_numbers(faces):
    model = perturbed_model("bplf_3x3", 7, faces)
    calls: list = []
    report = evaluate(
        model,
        faces,
        temperatures=(0.7,),
        samples_per_class=2,
        batch_size=21,
        tsne_points=30,
        reference_set=faces,
        transfer_reference_per_class=4,
        progress=record(calls),
    )
    check_progress(calls, list(STAGES))
    bits = [total for stage, _, total in calls if stage == "bits/dim"]
    assert bits[0] == math.ceil(len(faces) / (21 // 7))  # one call of the flow per 3 images x 7 labels
    assert [total for stage, _, total in calls if stage == "samples"][0] == 7
    old = straightforward_bits(model, faces, 128, 0)
    assert report.metrics["test_bpd"] == pytest.approx(old["standard"].mean(), rel=1e-5)
    assert report.metrics["test_bpd_bplf"] == pytest.approx(old["bplf"].mean(), rel=1e-5)
    assert report.metrics["test_bpd_marginal"] == pytest.approx(old["marginal"].mean(), rel=1e-5)
    with torch.inference_mode():
        predicted = bayes_log_posterior(model, faces.images).argmax(1).numpy()
    assert (report.predicted == predicted).all()
    assert report.metrics["accuracy"] == pytest.approx(float((predicted == faces.labels.numpy()).mean()))
    assert {"tsne", "transfer", "confusion_matrix", "samples_t0.7"} <= set(report.figures)


def test_progress_of_unconditional_and_unlabelled_evaluations(faces):
    model = perturbed_model("glow", None, faces)
    calls: list = []
    evaluate(model, faces, temperatures=(0.5, 1.0), samples_per_class=2, tsne_points=12, progress=record(calls))
    check_progress(calls, ["bits/dim", "samples", "t-SNE", "transfer", "curve"])
    assert [total for stage, _, total in calls if stage == "samples"][0] == 4  # 2 temperatures x 2 rows
    conditional = perturbed_model("glow", 7, faces)
    calls = []
    unlabelled = ImageSet(faces.images, None, "unlabelled", None)
    report = evaluate(conditional, unlabelled, temperatures=(), tsne_points=15, progress=record(calls))
    check_progress(calls, ["bits/dim", "samples", "t-SNE", "transfer", "curve"])  # nothing to classify against
    assert "tsne" in report.figures and "transfer" not in report.figures
    tsne = [(done, total) for stage, done, total in calls if stage == "t-SNE"]
    assert tsne[-1][1] == 1 + 2  # one classification batch of 15 images x 7 labels, then PCA and the fit
