"""SSIM against hand computations (one window over a 2x2 image: the formula's terms worked out below), the constant-
image closed form, scipy's Gaussian filter as an independent route to the reference algorithm, and its properties
on real faces."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from scoring.ssim import gaussian_window, ssim

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2  # 6.5025, 58.5225


def test_one_window_by_hand():
    """a = [[0, 0], [255, 255]] against b = [[0, 255], [0, 255]] under one uniform 2x2 window: both means 127.5,
    both variances 255^2 / 4 = 16256.25, covariance E[ab] - 127.5^2 = 65025 / 4 - 16256.25 = 0, so
    SSIM = (2 * 16256.25 + C1) * C2 / ((2 * 16256.25 + C1) * (2 * 16256.25 + C2)) = 58.5225 / 32571.0225."""
    a = np.array([[0, 0], [255, 255]], dtype=np.uint8)
    b = np.array([[0, 255], [0, 255]], dtype=np.uint8)
    assert float(ssim(a, b, window_size=2, sigma=None)) == pytest.approx(58.5225 / 32571.0225, rel=1e-12)
    # the negative of a: covariance -16256.25, SSIM = (2 * -16256.25 + C2) / (2 * 16256.25 + C2)
    assert float(ssim(a, 255 - a, window_size=2, sigma=None)) == pytest.approx(-32453.9775 / 32571.0225, rel=1e-12)
    assert float(ssim(a, a, window_size=2, sigma=None)) == pytest.approx(1.0, rel=1e-12)


def test_constant_images_follow_the_luminance_term():
    """No variance: SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1), whatever the window."""
    a, b = np.full((16, 16), 100.0), np.full((16, 16), 140.0)
    expected = (2 * 100 * 140 + C1) / (100**2 + 140**2 + C1)
    assert float(ssim(a, b)) == pytest.approx(expected, rel=1e-12)


def test_gaussian_window_is_the_papers():
    w = gaussian_window(11, 1.5)
    assert w.shape == (11,) and w.sum() == pytest.approx(1.0) and np.argmax(w) == 5
    assert w[4] / w[5] == pytest.approx(np.exp(-1 / (2 * 1.5**2)))
    assert np.allclose(w, w[::-1])


def _reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """The reference algorithm through scipy: Gaussian filtering (sigma 1.5, truncated at 3.5 sigma: 11 taps) of
    the whole image, then the 5-pixel border whose windows left the image cropped away (scikit-image's route)."""
    a, b = a.astype(np.float64), b.astype(np.float64)

    def blur(x):
        return scipy.ndimage.gaussian_filter(x, 1.5, truncate=3.5, mode="reflect")

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a**2 + mu_b**2 + C1) * (var_a + var_b + C2))
    return float(index[5:-5, 5:-5].mean())


def test_matches_the_reference_algorithm_and_batches(datasets_dir):
    from PIL import Image

    face = np.asarray(Image.open(datasets_dir / "faces" / "obama.jpg").convert("L").resize((64, 64)))
    rng = np.random.default_rng(0)
    noisy = np.clip(face + rng.normal(0, 20, face.shape), 0, 255).astype(np.uint8)
    shifted = np.roll(face, 3, axis=1)
    for other in (noisy, shifted, 255 - face):
        assert float(ssim(face, other)) == pytest.approx(_reference_ssim(face, other), abs=1e-10)
    batch = ssim(np.stack([face, face, face])[:, None], np.stack([face, noisy, shifted])[:, None])
    assert batch.shape == (3, 1)
    assert batch[0, 0] == pytest.approx(1.0) and 1.0 > batch[1, 0] > 0 and batch[2, 0] < 1.0
    assert float(ssim(noisy, face)) == pytest.approx(float(ssim(face, noisy)))  # symmetric
    heavier = np.clip(face + rng.normal(0, 60, face.shape), 0, 255).astype(np.uint8)
    assert float(ssim(face, heavier)) < float(ssim(face, noisy))  # more noise, less similar


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        ssim(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ValueError, match="smaller than"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))
