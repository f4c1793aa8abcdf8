"""BiCoGAN's trainer on real faces (CK+48, 48x48, tiny networks): the class map, one step's directions, exact
resume through ``run_training``, the non-finite guard, validation, and the registered model's API."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from bicogan_data import TINY, ckplus_faces, one_thread, same_state, split_every  # noqa: F401 (autouse fixture)

from adversarial.bicogan import BiCoGANModel, ClassMap, bicogan_from_checkpoint, trainer_from_params
from adversarial.bicogan.losses import discriminator_loss
from adversarial.bicogan.networks import BiCoGANNetworks
from adversarial.bicogan.training import encoded_label, step_losses
from flowmodels.data import ImageSet
from pipelines.labels import EMOTION_INDEX, EMOTIONS
from pipelines.model_params import BicoganParams, BicoganTrainParams
from training import TrainingDiverged
from training.loop import LoopConfig, run_training


@pytest.fixture(scope="module")
def faces(datasets_dir):
    return split_every(ckplus_faces(datasets_dir))


def section(classes="six", **train) -> BicoganParams:
    base = dict(batch_size=16, max_steps=8, checkpoint_every=0, val_every=0, log_every=2, lr=1e-3, device="cpu")
    return BicoganParams(
        classes=classes, alpha=1.0, rho=0.5, phi=4.0, **TINY, train=BicoganTrainParams(**{**base, **train})
    )


def test_the_class_map_drops_disgust_and_counts_it(faces):
    train, _ = faces
    six = ClassMap.named("six")
    assert six.names == ("anger", "fear", "happiness", "sadness", "surprise", "neutral") and six.dropped == ("disgust",)
    mapped, excluded = six.apply(train)
    disgust = int((train.labels == EMOTION_INDEX["disgust"]).sum())
    assert disgust > 0 and excluded == disgust and len(mapped) == len(train) - disgust
    assert mapped.class_names == six.names  # (CK+48 has no neutral faces: labels 0..4 here)
    kept = train.labels != EMOTION_INDEX["disgust"]
    assert torch.equal(mapped.images, train.images[kept])
    assert [six.names[k] for k in mapped.labels.tolist()] == [EMOTIONS[k] for k in train.labels[kept].tolist()]
    assert six.apply(mapped) == (mapped, 0)  # already in the class set
    seven, none = ClassMap.named("seven").apply(train)
    assert none == 0 and torch.equal(seven.labels, train.labels)
    assert six.index("neutral") == 5 and six.index(2) == 2
    with pytest.raises(ValueError, match="not in this model's class set"):
        six.index("disgust")
    with pytest.raises(ValueError, match="classes must be one of"):
        ClassMap.named("five")
    trainer = trainer_from_params(section(), *faces)
    summary = trainer.data_summary()
    assert trainer.excluded["train"] == disgust and summary["train"]["excluded"] == disgust
    assert summary["dropped"] == ["disgust"] and sum(summary["train"]["per_class"]) == len(mapped)


def test_one_step_moves_d_g_and_e_the_right_ways(faces):
    trainer = trainer_from_params(section(lr=2e-3), *faces)
    x, c, z = trainer.training_batch(0)
    before = copy.deepcopy(trainer.model)
    gamma = trainer.efl_weight(0)
    report = trainer.train_step(0)
    assert not report.skipped and report.images == 16 and report.gauges == {"lr": 2e-3, "gamma": 1.0}
    after = trainer.model

    def losses(g, e, d):
        return step_losses(BiCoGANNetworks(g, e, d, before.config), x, c, z, gamma, "non_saturating")

    old = losses(copy.deepcopy(before.generator), copy.deepcopy(before.encoder), before.discriminator)
    # D's step alone (G and E as they were) lowers D's loss; G's and E's step alone (D as it was) lowers theirs
    new_d = losses(copy.deepcopy(before.generator), copy.deepcopy(before.encoder), after.discriminator)
    new_ge = losses(copy.deepcopy(after.generator), copy.deepcopy(after.encoder), before.discriminator)
    value = {
        name: {k: float(v.detach()) for k, v in d.items()} for name, d in (("old", old), ("d", new_d), ("ge", new_ge))
    }
    assert value["d"]["d_loss"] < value["old"]["d_loss"]
    assert value["ge"]["ge_loss"] < value["old"]["ge_loss"] and value["ge"]["efl"] < value["old"]["efl"]
    assert report.losses["d_loss"] == pytest.approx(value["old"]["d_loss"], rel=1e-5)


def test_d_alone_learns_to_accept_real_pairs(faces):
    """On a fixed batch with G and E frozen, a few steps of D alone raise D(x, E(x)): its loss on real pairs falls."""
    trainer = trainer_from_params(section(), *faces)
    net = trainer.model
    x, c, z = trainer.training_batch(0)
    with torch.no_grad():
        z_hat, logits = net.encoder(x)
        fake = net.generator(z, F.one_hot(c, 6).float())
    real_tuple = (x, z_hat, encoded_label(logits))
    fake_tuple = (fake, z, F.one_hot(c, 6).float())
    optimizer = torch.optim.Adam(net.discriminator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    real_losses, d_losses = [], []
    for _ in range(20):
        real_logits, fake_logits = net.discriminator(*real_tuple), net.discriminator(*fake_tuple)
        real_losses.append(float(F.softplus(-real_logits.detach()).mean()))
        loss = discriminator_loss(real_logits, fake_logits)
        d_losses.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert real_losses[-1] < real_losses[0] - 0.01 and d_losses[-1] < d_losses[0] - 0.02
    assert d_losses[1] < d_losses[0]  # D's whole loss from the first step on


def test_resume_equals_an_uninterrupted_run_bitwise(faces, tmp_path):
    params = section(max_steps=8, checkpoint_every=4, val_every=4)  # rotation augmentation on (the default)
    assert params.train.augment.rotate == (-50.0, 30.0)
    config = LoopConfig.from_settings(params.train)

    straight = trainer_from_params(params, *faces)
    full = run_training(straight, config, tmp_path / "straight")

    first = trainer_from_params(params, *faces)
    run_training(first, LoopConfig.from_settings(params.train.replace(max_steps=4)), tmp_path / "interrupted")
    other_weights = params.replace(train=params.train.replace(seed=0))  # same run; the weights come from last.pt
    resumed_trainer = trainer_from_params(other_weights, *faces)
    with torch.no_grad():
        for p in resumed_trainer.model.parameters():
            p.add_(1.0)
    resumed = run_training(resumed_trainer, config, tmp_path / "interrupted")

    assert resumed.resumed_from_step == 4 and resumed.steps == full.steps == 8
    assert same_state(straight.model, resumed_trainer.model)
    for a, b in (
        (straight.d_optimizer, resumed_trainer.d_optimizer),
        (straight.ge_optimizer, resumed_trainer.ge_optimizer),
    ):
        sa, sb = a.state_dict()["state"], b.state_dict()["state"]
        assert all(torch.equal(sa[k][n], sb[k][n]) for k in sa for n in ("exp_avg", "exp_avg_sq"))
    assert [h["step"] for h in resumed.history] == [h["step"] for h in full.history] == [2, 4, 6, 8]
    strip = lambda h: {k: v for k, v in h.items() if k not in ("elapsed", "images_per_s")}
    assert [strip(h) for h in resumed.history] == [strip(h) for h in full.history]
    assert resumed.val_history == full.val_history and set(full.val) >= {"val_encoder_accuracy", "val_d_loss"}
    assert [h["gamma"] for h in full.history] == pytest.approx(
        [min(1.0 * 2.718281828459045 ** (0.5 * s / straight.steps_per_epoch), 4.0) for s in (1, 3, 5, 7)]
    )
    # another EFL schedule is another run: refused
    changed = trainer_from_params(params.replace(phi=5.0), *faces)
    with pytest.raises(ValueError, match="efl.phi"):
        run_training(changed, config, tmp_path / "interrupted")


def test_non_finite_steps_are_skipped_without_changing_anything(faces, tmp_path):
    trainer = trainer_from_params(section(max_bad_steps=2), *faces)
    with torch.no_grad():
        trainer.model.discriminator.joint[-1].weight.fill_(float("inf"))
    before = copy.deepcopy(trainer.model)
    report = trainer.train_step(0)
    assert report.skipped and "non-finite" in report.detail
    assert same_state(before, trainer.model)  # weights and batch-norm statistics untouched
    assert not trainer.d_optimizer.state and not trainer.ge_optimizer.state
    with pytest.raises(TrainingDiverged, match="lower learning rate"):
        run_training(trainer, LoopConfig.from_settings(section(max_bad_steps=2).train), tmp_path)


def test_validation_and_the_registered_model(faces, tmp_path):
    params = section(max_steps=6)
    trainer = trainer_from_params(params, *faces)
    result = run_training(trainer, LoopConfig.from_settings(params.train), tmp_path)
    val = trainer.validate(6)
    assert set(val) == {"val_encoder_accuracy", "val_efl", "val_d_loss", "val_d_real", "val_d_fake"}
    assert 0 <= val["val_encoder_accuracy"] <= 1 and val == result.val
    model = trainer.final_model()
    assert isinstance(model, BiCoGANModel) and not model.training
    assert model.class_names == ClassMap.named("six").names and model.image_shape == (1, 48, 48)

    faces_u8 = faces[1].images[:5]
    happy = model.sample(4, "happiness", seed=7)
    assert happy.shape == (4, 1, 48, 48) and happy.dtype == torch.uint8
    assert torch.equal(happy, model.sample(4, 2, seed=7))  # a name or its index
    assert torch.equal(happy, model.decode(model.latents(4, 7), [2, 2, 2, 2]))
    assert torch.equal(model.latents(4, 7), model.latents(4, 7)) and not torch.equal(
        model.latents(4, 7), model.latents(4, 8)
    )
    z, logits = model.encode(faces_u8)
    assert z.shape == (5, 8) and logits.shape == (5, 6)
    probs = model.classify(faces_u8)
    assert torch.allclose(probs.sum(1), torch.ones(5)) and torch.allclose(probs, torch.softmax(logits, 1))
    edited = model.edit(faces_u8, "surprise")
    assert edited.shape == (5, 1, 48, 48) and torch.equal(edited, model.decode(z, "surprise"))
    assert torch.equal(model.reconstruct(faces_u8), model.decode(z, logits.argmax(1)))
    assert torch.equal(model.edit(faces_u8, ["anger"] * 5), model.decode(z, 0))
    with pytest.raises(ValueError, match="class set"):
        model.sample(2, "disgust", seed=0)
    with pytest.raises(ValueError, match="3 labels for 2"):
        model.decode(z[:2], [0, 1, 2])
    with pytest.raises(ValueError, match="uint8"):
        model.encode(faces_u8.float())

    loaded = bicogan_from_checkpoint(tmp_path / "last.pt")
    assert same_state(loaded, model) and loaded.class_names == model.class_names
    rebuilt = BiCoGANModel.from_config(model.config)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.sample(3, "neutral", seed=1), model.sample(3, "neutral", seed=1))
    with pytest.raises(ValueError, match="not a BiCoGAN"):
        bicogan_from_checkpoint({"kind": "flow"})


def test_64x64_faces_train_too(faces):
    def upsized(s: ImageSet) -> ImageSet:
        big = F.interpolate(s.images.float(), size=(64, 64), mode="bilinear", align_corners=False)
        return ImageSet(big.round().clamp(0, 255).to(torch.uint8), s.labels, s.name + "/64", s.class_names)

    trainer = trainer_from_params(section("seven"), upsized(faces[0]), upsized(faces[1]))
    assert trainer.model.image_shape == (1, 64, 64) and trainer.excluded == {"train": 0, "val": 0}
    report = trainer.train_step(0)
    assert not report.skipped and all(v == v for v in report.losses.values())
    assert trainer.final_model().sample(2, "disgust", seed=0).shape == (2, 1, 64, 64)
