"""The Frechet distance against its closed forms: 0 for one set, the diagonal-Gaussian formula, the mean shift,
symmetry, pytorch-fid's sqrtm route on full covariances, and singular covariances (fewer samples than dimensions)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from scoring.frechet import frechet_distance, frechet_distance_from_stats, gaussian_stats


def test_identical_sets_are_at_distance_zero():
    x = np.random.default_rng(0).normal(size=(200, 12))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_diagonal_gaussians_match_the_closed_form():
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = float(((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum())  # 7.25 + 5
    got = frechet_distance_from_stats(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-12) and expected == pytest.approx(12.25)


def test_a_shift_adds_its_squared_length_and_order_does_not_matter():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(250, 6)) * 2.0 + 0.3
    shift = np.array([1.0, -2.0, 0.0, 0.5, 0.0, 3.0])
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-9)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    assert frechet_distance(a, b) > 1.0


def test_full_covariances_agree_with_the_sqrtm_route():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8)), rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8))
    (mu_a, s_a), (mu_b, s_b) = gaussian_stats(a), gaussian_stats(b)
    root = scipy.linalg.sqrtm(s_a @ s_b).real
    reference = float((mu_a - mu_b) @ (mu_a - mu_b) + np.trace(s_a + s_b - 2 * root))
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-8)
    np.testing.assert_allclose(mu_a, a.mean(0))
    np.testing.assert_allclose(s_a, np.cov(a, rowvar=False))


def test_singular_covariances_give_a_finite_distance():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(20, 64)), rng.normal(size=(30, 64)) + 0.1  # rank 19 and 29 covariances in 64 dimensions
    d = frechet_distance(a, b)
    assert np.isfinite(d) and d > 0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(a[:1])
