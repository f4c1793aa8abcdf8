"""The identity network standing in for Light CNN: Max-Feature-Map, the verification score, the subject sets built
from real shards, and a short training on real JAFFE faces that learns the posers and resumes exactly."""

from __future__ import annotations

import pytest
import torch
from nfgan_settings import narrow_params

from adversarial.nfgan.identity import (
    IdentityFeatures,
    IdentityTrainer,
    MaxFeatureMap,
    build_identity_network,
    identity_from_checkpoint,
    load_identity_set,
    verification_scores,
)
from adversarial.nfgan.networks import weights_digest
from training.loop import LoopConfig, run_training


def test_max_feature_map_takes_the_larger_half():
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0]])[:, :, None, None]  # halves (1, -2) and (0.5, 3)
    assert MaxFeatureMap()(x).flatten().tolist() == [1.0, 3.0]
    assert MaxFeatureMap()(torch.tensor([[4.0, 0.0, -1.0, 7.0]])).tolist() == [[4.0, 7.0]]


def test_verification_scores_on_hand_made_embeddings():
    subjects = torch.tensor([0, 0, 1, 1])
    good = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    scores = verification_scores(good, subjects)
    assert scores["auc"] == 1.0 and scores["same_distance"] < scores["different_distance"]
    # the one same-person pair (distance 1) is further apart than both different-person pairs (0.29)
    far = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    assert verification_scores(far, torch.tensor([0, 0, 1]))["auc"] == 0.0
    # against the definition, pair by pair, on random embeddings of 4 people
    g = torch.Generator().manual_seed(1)
    emb, who = torch.randn(12, 5, generator=g), torch.arange(12) % 4
    e = emb / emb.norm(dim=1, keepdim=True)
    d = {(i, j): 1 - float(e[i] @ e[j]) for i in range(12) for j in range(i + 1, 12)}
    same = [v for (i, j), v in d.items() if who[i] == who[j]]
    diff = [v for (i, j), v in d.items() if who[i] != who[j]]
    wins = sum((s < t) + 0.5 * (s == t) for s in same for t in diff)
    assert verification_scores(emb, who)["auc"] == pytest.approx(wins / (len(same) * len(diff)))
    ties = verification_scores(torch.ones(4, 2), subjects)  # every distance equal: chance
    assert ties["auc"] == 0.5
    assert verification_scores(good, torch.zeros(4, dtype=torch.long)) == {}  # one person: nothing to separate


def test_identity_sets_leave_out_pseudo_subjects_and_small_subjects(emotionset):
    train = load_identity_set(emotionset.path, "train", min_images=4)
    sources = {name.split("/")[0] for name in train.class_names}
    assert sources == {"jaffe", "ckplus"}  # FER2013's one-image pseudo-subjects are no people to tell apart
    counts = torch.bincount(train.labels, minlength=len(train.class_names))
    assert int(counts.min()) >= 4 and len(train.class_names) > 60  # CK+48's 118 subjects, most in train
    assert train.image_shape == (1, 48, 48) and len(train.ids) == len(train)
    everyone = load_identity_set(emotionset.path, "train", min_images=1)
    assert len(everyone.class_names) >= len(train.class_names) and len(everyone) >= len(train)


def test_short_training_learns_the_posers_and_resumes_exactly(jaffe64, tmp_path):
    params = narrow_params(identity_train={"max_steps": 30, "val_every": 10, "log_every": 5, "lr": 3e-3})
    config = params.identity.train
    train = load_identity_set(jaffe64.path, "train", params.identity.min_images)
    val = load_identity_set(jaffe64.path, "val", 1)
    net = build_identity_network(train, params.identity, seed=0)
    result = run_training(IdentityTrainer(net, train, val, config), LoopConfig.from_settings(config), tmp_path / "a")
    first, last = result.history[0], result.history[-1]
    assert last["ce"] < 0.5 * first["ce"] and last["accuracy"] > 0.8
    reloaded = identity_from_checkpoint(result.checkpoint)
    x = train.images[:8]
    assert torch.allclose(reloaded(x), net.eval()(x), atol=1e-6)
    assert reloaded.class_names == tuple(train.class_names)

    # interrupted after 20 steps and resumed with other initial weights: the same weights at step 30
    part = config.replace(max_steps=20)
    other = build_identity_network(train, params.identity, seed=0)
    run_training(IdentityTrainer(other, train, val, part), LoopConfig.from_settings(part), tmp_path / "b")
    resumed_net = build_identity_network(train, params.identity, seed=9)
    resumed = run_training(
        IdentityTrainer(resumed_net, train, val, config), LoopConfig.from_settings(config), tmp_path / "b"
    )
    assert resumed.resumed_from_step == 20
    assert weights_digest(resumed_net) == weights_digest(net)
    assert resumed.val == pytest.approx(result.val)

    features = IdentityFeatures(net, (-2, -1))
    maps = features(x)
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 4, 4), (32,)]  # last block at 64 / 16, the embedding
    assert not any(p.requires_grad for p in features.parameters())
    early = IdentityFeatures(net, (1,))(x)
    assert [tuple(m.shape[1:]) for m in early] == [(16, 16, 16)]
