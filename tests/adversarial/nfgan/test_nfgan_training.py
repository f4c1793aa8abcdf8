"""NFGAN's training on real JAFFE pairs at 64x64: Algorithm 1's gradient routing checked against a by-hand
recomputation, exact resume, the non-finite guard, and a short training that lowers the held-out pixel loss."""

from __future__ import annotations

import copy

import pytest
import torch
from nfgan_settings import narrow_params

from adversarial.nfgan.identity import IdentityNetwork, load_identity_set, to_generator_scale
from adversarial.nfgan.losses import (
    discriminator_loss,
    generator_adversarial_loss,
    identity_loss,
    perceptual_loss,
    pixel_loss,
    symmetry_loss,
)
from adversarial.nfgan.networks import build_networks, weights_digest
from adversarial.nfgan.training import (
    NFGANNormalizer,
    NFGANTrainer,
    PairSet,
    build_extractors,
    load_pair_set,
    nfgan_from_checkpoint,
    train_nfgan,
)
from training.loop import TrainingDiverged


@pytest.fixture(scope="module")
def pairs(jaffe64):
    return load_pair_set(jaffe64.path, "train"), load_pair_set(jaffe64.path, "val")


def _extractors(params, seed: int = 0):
    """The losses' feature networks: an identity network (untrained unless a test trains one), frozen."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = IdentityNetwork((64, 64), 8, params.identity.widths, params.identity.embedding)
    return build_extractors(net, params)


def test_pair_sets_hold_other_people_in_val_and_bad_inputs_are_refused(pairs, jaffe64):
    train, val = pairs
    assert train.image_shape == val.image_shape == (1, 64, 64) and train.inputs.dtype == torch.uint8
    assert not set(train.subjects) & set(val.subjects)
    assert len(train) > 100 and not torch.equal(train.inputs, train.targets)
    params = narrow_params()
    g, d = build_networks(params, seed=0)
    small = PairSet(
        train.inputs[:, :, :48, :48].contiguous(), train.targets[:, :, :48, :48].contiguous(), "small", train.subjects
    )
    with pytest.raises(ValueError, match=r"data.image_size: \[64, 64\]"):
        NFGANTrainer(g, d, small, None, params, *_extractors(params))
    with pytest.raises(ValueError, match="needs a perceptual feature extractor"):
        NFGANTrainer(g, d, train, None, params)
    with pytest.raises(ValueError, match="one entry per pair"):
        PairSet(train.inputs, train.targets[:3], "bad", train.subjects)
    with pytest.raises(ValueError, match="no test pairs"):
        load_pair_set(jaffe64.path, "test", sources=["ckplus"])


def test_one_step_routes_the_gradients_as_algorithm_1(pairs):
    """Enc gets d(L_feat + l1 L_id + l2 L_pixel); Dec also d(eta L_GAN-Dec + l3 L_sym); Dis only d L_GAN-Dis."""
    train, _ = pairs
    params = narrow_params(
        losses={"pixel": 0.5, "perceptual": 0.2, "identity": 0.05, "symmetry": 0.3, "adversarial": 0.7}
    )
    w = params.losses
    g, d = build_networks(params, seed=0)
    perceptual, identity = _extractors(params)
    trainer = NFGANTrainer(g, d, train, None, params, perceptual, identity)
    g0, d0 = copy.deepcopy(g), copy.deepcopy(d)
    x, y = trainer._batch(0)
    trainer.train_step(0)

    fake = g0(x)
    shared = w.pixel * pixel_loss(fake, y) + w.perceptual * perceptual_loss(fake, y, perceptual)
    shared = shared + w.identity * identity_loss(fake, x, identity)
    decoder_only = w.symmetry * symmetry_loss(fake, "pixel") + w.adversarial * generator_adversarial_loss(d0(fake))
    enc = torch.autograd.grad(shared, list(g0.encoder.parameters()), retain_graph=True)
    dec = torch.autograd.grad(shared + decoder_only, list(g0.decoder.parameters()), retain_graph=True)
    dis = torch.autograd.grad(discriminator_loss(d0(y), d0(fake.detach())), list(d0.parameters()))
    for got, want in ((g.encoder, enc), (g.decoder, dec), (d, dis)):
        for p, expected in zip(got.parameters(), want, strict=True):
            assert torch.allclose(p.grad, expected, rtol=1e-4, atol=1e-7)
    # the decoder-only losses really do not reach the encoder (without them its gradient is unchanged) ...
    assert any(
        not torch.allclose(a, b) for a, b in zip(dec, torch.autograd.grad(shared, list(g0.decoder.parameters())))
    )


def test_decoder_only_losses_leave_the_encoder_untouched(pairs):
    train, _ = pairs
    params = narrow_params(
        losses={"pixel": 0.0, "perceptual": 0.0, "identity": 0.0, "symmetry": 1.0, "adversarial": 1.0}
    )
    g, d = build_networks(params, seed=0)
    trainer = NFGANTrainer(g, d, train, None, params)
    encoder, decoder = weights_digest(g.encoder), weights_digest(g.decoder)
    report = trainer.train_step(0)
    assert not report.skipped and set(report.losses) >= {
        "pixel",
        "symmetry",
        "adversarial",
        "discriminator",
        "generator",
    }
    # BN running statistics move in any forward pass in train mode: compare the parameters
    assert weights_digest(g.decoder) != decoder
    before = build_networks(params, seed=0)[0].encoder
    assert all(torch.equal(a, b) for a, b in zip(g.encoder.parameters(), before.parameters()))
    assert encoder != weights_digest(g.encoder)  # ... while its BN statistics did move


def test_resume_after_interruption_equals_an_uninterrupted_run(pairs, tmp_path):
    train, val = pairs
    params = narrow_params(train={"max_steps": 6, "checkpoint_every": 2, "val_every": 3, "log_every": 1, "flip": 0.5})
    perceptual, identity = _extractors(params)
    g, d = build_networks(params, seed=0)
    straight, model = train_nfgan(g, d, train, val, params, tmp_path / "straight", perceptual, identity)

    part = params.replace(train=params.train.replace(max_steps=4))
    g1, d1 = build_networks(part, seed=0)
    train_nfgan(g1, d1, train, val, part, tmp_path / "resumed", perceptual, identity)
    g2, d2 = build_networks(params, seed=3)  # other initial weights: everything must come from the checkpoint
    resumed, _ = train_nfgan(g2, d2, train, val, params, tmp_path / "resumed", perceptual, identity)
    assert resumed.resumed_from_step == 4 and resumed.steps == straight.steps == 6
    assert weights_digest(g2) == weights_digest(g) and weights_digest(d2) == weights_digest(d)
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["step"] == b["step"] and all(a[k] == pytest.approx(b[k], abs=1e-6) for k in ("pixel", "discriminator"))
    assert resumed.val == pytest.approx(straight.val, abs=1e-6)
    other = params.replace(losses=params.losses.replace(pixel=0.5))
    with pytest.raises(ValueError, match="different run"):
        train_nfgan(*build_networks(other, seed=0), train, val, other, tmp_path / "resumed", perceptual, identity)

    reloaded = nfgan_from_checkpoint(straight.checkpoint)
    assert isinstance(reloaded, NFGANNormalizer) and torch.equal(reloaded(val.inputs[:5]), model(val.inputs[:5]))


class _Broken(torch.nn.Module):
    def forward(self, x):
        return x * float("nan")


def test_non_finite_steps_are_skipped_and_a_persistent_one_stops_with_advice(pairs, tmp_path):
    train, _ = pairs
    params = narrow_params(train={"max_steps": 10, "max_bad_steps": 3})
    g, d = build_networks(params, seed=0)
    generator, discriminator = (
        [p.detach().clone() for p in g.parameters()],
        [p.detach().clone() for p in d.parameters()],
    )
    _, identity = _extractors(params)
    with pytest.raises(TrainingDiverged, match="adversarial weight"):
        train_nfgan(g, d, train, None, params, tmp_path, _Broken(), identity)
    assert all(torch.equal(a, b) for a, b in zip(g.parameters(), generator))
    assert all(torch.equal(a, b) for a, b in zip(d.parameters(), discriminator))


def test_short_training_lowers_the_pixel_loss_on_held_out_pairs(pairs, jaffe64, tmp_path):
    """All five losses, with an identity network first trained on the training split's posers."""
    from adversarial.nfgan.identity import IdentityTrainer, build_identity_network
    from training.loop import LoopConfig, run_training

    train, val = pairs
    params = narrow_params(
        train={"max_steps": 60, "batch_size": 16, "lr": 1e-3, "val_every": 30, "log_every": 10},
        identity_train={"max_steps": 15, "lr": 3e-3},
    )
    faces = load_identity_set(jaffe64.path, "train", params.identity.min_images)
    net = build_identity_network(faces, params.identity, seed=0)
    run_training(
        IdentityTrainer(net, faces, None, params.identity.train),
        LoopConfig.from_settings(params.identity.train),
        tmp_path / "id",
    )
    perceptual, identity = build_extractors(net, params)
    g, d = build_networks(params, seed=0)
    trainer = NFGANTrainer(g, d, train, val, params, perceptual, identity)
    before = trainer.validate(0)
    result, model = train_nfgan(g, d, train, val, params, tmp_path / "nfgan", perceptual, identity)
    after = result.val
    assert set(after) == {"val_l1", "val_l1_input", "val_perceptual", "val_identity", "val_symmetry"}
    assert after["val_l1"] < 0.9 * before["val_l1"], (before, after)
    assert after["val_l1_input"] == pytest.approx(before["val_l1_input"])  # the same held-out pairs
    out = model(val.inputs[:4])
    assert out.dtype == torch.uint8 and out.shape == (4, 1, 64, 64) and out.float().std() > 5
    direct = ((g.eval()(to_generator_scale(val.inputs[:4])) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(out, direct)
    with pytest.raises(ValueError, match="uint8 faces"):
        model(val.inputs[:4].float())
