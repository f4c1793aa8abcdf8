"""predict_probabilities (test-time flip = the mean of the two softmaxes) and judge_features on real faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recognition.network import build_judge
from recognition.scoring import judge_features, predict_probabilities


@pytest.fixture(scope="module")
def judge_and_faces(ck_faces):
    judge = build_judge((1, 48, 48), 7, (8, 16, 32), 0.5, seed=2)
    with torch.no_grad():  # move batch norm's running statistics off their initial values: a judge that has seen faces
        for start in range(0, 256, 64):
            judge.train()(ck_faces.images[start : start + 64])
    return judge.train(), ck_faces.subset(slice(0, 37))


def test_flip_is_the_mean_of_the_softmax_of_face_and_mirror(judge_and_faces):
    judge, faces = judge_and_faces
    flipped = predict_probabilities(judge, faces, batch_size=16, test_time_flip=True)
    plain = predict_probabilities(judge, faces.images, batch_size=16, test_time_flip=False)
    assert judge.training  # the caller's mode is restored
    with torch.no_grad():
        judge.eval()
        direct = torch.softmax(judge(faces.images).double(), 1)
        mirror = torch.softmax(judge(torch.flip(faces.images, dims=[3])).double(), 1)
        judge.train()
    assert flipped.dtype == np.float64 and flipped.shape == (37, 7)
    np.testing.assert_allclose(plain, direct.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flipped, ((direct + mirror) / 2).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flipped.sum(1), 1.0, atol=1e-6)
    assert np.abs(flipped - plain).max() > 1e-4  # the mirror image does change the answer


def test_batch_size_does_not_change_the_answer(judge_and_faces):
    judge, faces = judge_and_faces
    a = predict_probabilities(judge, faces, batch_size=5, test_time_flip=True)
    b = predict_probabilities(judge, faces, batch_size=100, test_time_flip=True)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_features_are_the_pooled_penultimate_layer(judge_and_faces):
    judge, faces = judge_and_faces
    features = judge_features(judge, faces.images, batch_size=8)
    with torch.no_grad():
        expected = judge.eval().features(faces.images).double().numpy()
    judge.train()
    assert features.dtype == np.float64 and features.shape == (37, judge.feature_dim)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    assert judge_features(judge, faces.images[:0], batch_size=8).shape == (0, judge.feature_dim)
    assert predict_probabilities(judge, faces.images[:0], batch_size=8, test_time_flip=True).shape == (0, 7)
