"""Seeded augmentation: a pure function of (seed, step), the identity when off, exact flips and rotations."""

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.params import AugmentParams
from training.augment import Augmentation


@pytest.fixture(scope="module")
def faces(datasets_dir):
    folder = datasets_dir / "ckplus48" / "CK+48" / "happy"
    arrays = [np.asarray(Image.open(p).convert("L")) for p in sorted(folder.glob("*.png"))[:8]]
    return torch.from_numpy(np.stack(arrays)[:, None].copy())


def test_off_is_the_identity_and_on_is_seeded(faces):
    assert torch.equal(Augmentation()(faces, seed=0, step=0), faces)
    every = AugmentParams(
        rotate=(-50, 30), crop=(0, 0.2), flip=0.5, gamma=(0.5, 2), scale=(1, 1.5), shear=(0, 0.2)
    ).build()
    a, b = every(faces, seed=3, step=7), every(faces, seed=3, step=7)
    assert a.dtype == torch.uint8 and a.shape == faces.shape and torch.equal(a, b)
    assert not torch.equal(every(faces, seed=3, step=8), a) and not torch.equal(every(faces, seed=4, step=7), a)
    assert not torch.equal(a, faces)


def test_flip_and_quarter_turn_are_exact(faces):
    assert torch.equal(Augmentation(flip=1.0)(faces, 0, 0), faces.flip(-1))
    turned = Augmentation(rotate=(90, 90))(faces, 0, 0)
    assert torch.equal(turned, faces.rot90(1, (2, 3)))


def test_gamma_brightens_below_one_and_darkens_above(faces):
    bright = Augmentation(gamma=(0.5, 0.5))(faces, 0, 0).float().mean()
    dark = Augmentation(gamma=(2.0, 2.0))(faces, 0, 0).float().mean()
    assert dark < faces.float().mean() < bright


def test_rotation_range_is_respected():
    # a single bright pixel right of the centre rotates to an angle inside the range
    image = torch.zeros(64, 1, 33, 33, dtype=torch.uint8)
    image[:, 0, 16, 28] = 255
    out = Augmentation(rotate=(-50, 30))(image, seed=1, step=0).float()
    ys, xs = torch.meshgrid(torch.arange(33.0), torch.arange(33.0), indexing="ij")
    weight = out[:, 0] / out[:, 0].sum(dim=(1, 2), keepdim=True)
    cy, cx = (weight * ys).sum((1, 2)), (weight * xs).sum((1, 2))
    angles = torch.rad2deg(torch.atan2(-(cy - 16), cx - 16))  # counter-clockwise on screen
    assert angles.min() >= -50.5 and angles.max() <= 30.5 and angles.max() - angles.min() > 40
