import numpy as np
import pytest

from pipelines.svd import kept_ranks, truncate_singular_values


def _images(n=5, h=48, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w), dtype=np.uint8)


def test_full_rank_reconstructs_exactly():
    x = _images()
    assert np.array_equal(truncate_singular_values(x, rank=48), x)


def test_rank_k_matches_eckart_young_reconstruction():
    x = _images(n=3)
    out = truncate_singular_values(x, rank=4)
    for img, got in zip(x, out):
        u, s, vt = np.linalg.svd(img.astype(np.float64))
        best = (u[:, :4] * s[:4]) @ vt[:4]
        assert np.abs(got.astype(np.float64) - np.clip(np.rint(best), 0, 255)).max() <= 1
        # the truncated image really has (numerically) rank <= 4 before rounding
        assert np.linalg.matrix_rank(best, tol=1e-6 * s[0]) == 4


def test_low_rank_image_is_unchanged():
    col = np.arange(48, dtype=np.uint8)[:, None] * 5
    rank_one = (col @ np.ones((1, 48), dtype=np.uint8)).astype(np.uint8)
    assert np.array_equal(truncate_singular_values(rank_one, rank=1), rank_one)


def test_energy_picks_smallest_rank_reaching_the_fraction():
    s = np.array([[3.0, 2.0, 1.0, 0.0]])  # energies 9, 4, 1 of 14
    assert kept_ranks(s, None, 9 / 14).tolist() == [1]
    assert kept_ranks(s, None, 9 / 14 + 1e-6).tolist() == [2]
    assert kept_ranks(s, None, 1.0).tolist() == [3]
    assert kept_ranks(np.zeros((1, 4)), None, 0.9).tolist() == [1]  # a blank image keeps one value


def test_energy_truncation_keeps_at_least_that_energy():
    x = _images(n=4, seed=3)
    out = truncate_singular_values(x, energy=0.95)
    for img, got in zip(x, out):
        err = np.linalg.norm(img.astype(float) - got.astype(float)) ** 2
        total = np.linalg.norm(img.astype(float)) ** 2
        # dropped energy <= 5% (+ rounding noise: at most 0.25 per pixel squared)
        assert err <= 0.05 * total + 0.25 * img.size


def test_single_image_and_64x64_shape():
    x = _images(n=1, h=64, w=64)[0]
    out = truncate_singular_values(x, rank=8)
    assert out.shape == (64, 64) and out.dtype == np.uint8


def test_needs_exactly_one_of_rank_or_energy():
    with pytest.raises(ValueError):
        truncate_singular_values(_images(1), rank=2, energy=0.9)
    with pytest.raises(ValueError):
        truncate_singular_values(_images(1))
