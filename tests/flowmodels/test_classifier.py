"""The flow-latent classifier (paper 002) and Bayes-rule classification with class-conditional flows."""

import math

import pytest
import torch
from flow_numerics import brute_force_logdet, perturb_parameters

from flowmodels import bayes_log_posterior, bayes_posterior, bayes_predict, build_classifier, build_model

TINY = dict(levels=2, steps=2, hidden=16)


def _images(n, seed=0, size=16):
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _classifier(num_classes=4, seed=0, **kw):
    torch.manual_seed(seed)
    clf = build_classifier((1, 16, 16), num_classes, h_steps=2, h_hidden=8, **{**TINY, **kw})
    clf.initialize(_images(8, seed), torch.arange(8) % num_classes)
    return perturb_parameters(clf, 0.05, seed)


def test_posterior_sums_to_one_and_predict_is_its_argmax():
    clf = _classifier()
    x = _images(5, seed=3)
    post = clf.posterior(x)
    assert post.shape == (5, 4)
    assert torch.allclose(post.sum(1), torch.ones(5), atol=1e-6)
    assert torch.equal(clf.predict(x), post.argmax(1))
    assert (post.max(1).values < 1).any() or (post.min(1).values > 0).any()  # not a degenerate constant


def test_one_pass_of_f_and_batched_h_equals_class_by_class_likelihood():
    """log p(x|y) (eq. 2) computed the cheap way equals f and h run separately for each class."""
    clf = _classifier()
    x = clf.f.dequantize(_images(3, seed=4))
    fast = clf.class_log_likelihoods(x)
    latents, log_p_splits, logdet_f = clf.f.flow.transform(x)
    for c in range(4):
        cond = torch.nn.functional.one_hot(torch.full((3,), c), 4).float()
        z, logdet_h = clf.h(latents[-1], cond)
        slow = log_p_splits + logdet_f + logdet_h + clf.f.flow.top_prior.log_prob(z)
        assert torch.allclose(fast[:, c], slow, atol=1e-3)


def test_conditional_flow_h_logdet_against_brute_force():
    clf = _classifier().double()
    top = torch.randn(2, *clf.f.flow.latent_shapes[-1], dtype=torch.float64)
    cond = torch.nn.functional.one_hot(torch.tensor([1, 3]), 4).double()
    _, logdet = clf.h(top, cond)
    brute = torch.stack(
        [brute_force_logdet(lambda v, i=i: clf.h(v, cond[i : i + 1]), top[i : i + 1])[0] for i in range(2)]
    )
    assert torch.allclose(logdet, brute, atol=1e-8)


def test_loss_is_cond_plus_lambda_class():
    clf = _classifier()
    x, y = _images(6, seed=5), torch.tensor([0, 1, 2, 3, 0, 1])
    noise = torch.rand(x.shape)
    parts = clf.loss(x, y, noise)
    assert clf.lam == pytest.approx(0.3)
    assert torch.allclose(parts["total"], parts["cond"] + 0.3 * parts["class"])
    log_lik = clf.class_log_likelihoods(clf.f.dequantize(x, noise))
    expected_cond = ((-log_lik[torch.arange(6), y] / 256 + 8 * math.log(2)) / math.log(2)).mean()
    assert torch.allclose(parts["cond"], expected_cond, atol=1e-5)
    expected_class = torch.nn.functional.cross_entropy(log_lik - math.log(4), y)
    assert torch.allclose(parts["class"], expected_class, atol=1e-5)


def test_encode_decode_round_trip_through_h():
    clf = _classifier()
    x = torch.rand(2, 1, 16, 16) - 0.5
    zs = clf.encode(x, torch.tensor([2, 1]))
    assert (clf.decode(zs, torch.tensor([2, 1])) - x).abs().max() < 1e-4


def test_classifier_learns_to_separate_two_easy_classes():
    """Dark versus bright noise images: a few dozen Adam steps on L_cond + 0.3 L_class must classify held-out
    images of both classes correctly (chance: 50%)."""
    torch.manual_seed(0)
    clf = build_classifier((1, 8, 8), 2, h_steps=2, h_hidden=16, levels=2, steps=1, hidden=16)

    def batch(n, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 2, (n,), generator=g)
        base = torch.where(y[:, None, None, None] == 1, 170, 40)
        return (base + torch.randint(0, 50, (n, 1, 8, 8), generator=g)).to(torch.uint8), y

    x, y = batch(64, 1)
    clf.initialize(x, y)
    opt = torch.optim.Adam(clf.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster and immune to a busy second core
    try:
        for step in range(40):
            x, y = batch(64, 100 + step)
            loss = clf(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    x_test, y_test = batch(200, 7)
    with torch.no_grad():
        accuracy = (clf.predict(x_test) == y_test).float().mean().item()
    assert accuracy > 0.95


def test_bayes_rule_for_class_conditional_flows():
    torch.manual_seed(0)
    model = build_model("bplf_3x3", (1, 16, 16), num_classes=3, **TINY)
    model.initialize(_images(6), torch.tensor([0, 1, 2, 0, 1, 2]))
    perturb_parameters(model, 0.05)
    x = _images(4, seed=2)
    post = bayes_posterior(model, x)
    assert torch.allclose(post.sum(1), torch.ones(4), atol=1e-6)
    per_class = torch.stack([model.log_prob(model._continuous(x), c) for c in range(3)], 1)
    assert torch.allclose(bayes_log_posterior(model, x), torch.log_softmax(per_class, 1), atol=1e-4)
    # a prior that favours class 2 strongly moves every decision there
    prior = torch.log(torch.tensor([1e-30, 1e-30, 1.0]))
    assert torch.equal(bayes_predict(model, x, prior), torch.full((4,), 2))
    with pytest.raises(ValueError):
        bayes_posterior(build_model("glow", (1, 16, 16), **TINY), x)


def test_classifier_checkpoint_round_trip(tmp_path):
    clf = _classifier(num_classes=3, seed=1)
    x = _images(3, seed=9)
    expected = clf.log_posterior(x)
    torch.save(clf.state_dict(), tmp_path / "clf.pt")
    fresh = build_classifier(**clf.config)
    fresh.load_state_dict(torch.load(tmp_path / "clf.pt", weights_only=True))
    assert torch.allclose(fresh.log_posterior(x), expected)
    assert fresh.pixel_column == "pixels"
