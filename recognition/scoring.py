"""The judge at work: class probabilities (optionally averaged with the mirror image) and penultimate features
(the embedding the scoreboard's Frechet distance compares, as FID compares Inception's pool features)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from flowmodels.data import ImageSet
from recognition.network import EmotionJudge


def _images(images: ImageSet | Tensor) -> Tensor:
    tensor = images.images if isinstance(images, ImageSet) else images
    if not isinstance(tensor, Tensor) or tensor.dim() != 4:
        raise ValueError("images: an ImageSet or a tensor (N, C, H, W), uint8 or float in [0, 1]")
    return tensor


def _batched(model: EmotionJudge, images: Tensor, batch_size: int, compute) -> np.ndarray:
    """``compute(batch on the model's device)`` over the images, in eval mode under inference_mode (the model's
    mode is restored afterwards), as one float64 array."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for start in range(0, images.shape[0], batch_size):
                x = images[start : start + batch_size].to(device, non_blocking=True)
                out.append(compute(x).double().cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.empty((0, 0), dtype=np.float64)
    return np.concatenate(out)


def predict_probabilities(
    model: EmotionJudge, images: ImageSet | Tensor, batch_size: int, test_time_flip: bool
) -> np.ndarray:
    """float64 (N, C) softmax probabilities; with ``test_time_flip`` the mean of the softmax of each face and of
    its horizontal mirror (faces are near-symmetric, expressions fully so)."""

    def probabilities(x: Tensor) -> Tensor:
        p = torch.softmax(model(x).float(), dim=1)
        if test_time_flip:
            p = 0.5 * (p + torch.softmax(model(torch.flip(x, dims=[3])).float(), dim=1))
        return p

    result = _batched(model, _images(images), batch_size, probabilities)
    return result if len(result) else np.empty((0, model.num_classes), dtype=np.float64)


def judge_features(model: EmotionJudge, images: ImageSet | Tensor, batch_size: int) -> np.ndarray:
    """float64 (N, feature_dim): the globally pooled features before dropout and the head."""
    result = _batched(model, _images(images), batch_size, model.features)
    return result if len(result) else np.empty((0, model.feature_dim), dtype=np.float64)
