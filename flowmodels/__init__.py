"""emoflow's flow models: Glow and BPLF, unconditional and emotion-conditional, and likelihood-based
expression classifiers. Pure PyTorch.

Public surface::

    model = build_model("bplf_3x3", (1, 48, 48), num_classes=7, levels=3, steps=8, hidden=512)
    model.initialize(x_uint8, y)                 # actnorm data init (else the first batch does it)
    loss = model.bits_per_dim(x_uint8, y).mean() # (N,) bits/dim at model.n_bits; model(x, y) is the same
    zs = model.encode(x, y); x_rec = model.decode(zs, y)
    images = model.sample(16, y=3, temperature=0.7)   # continuous; model.to_uint8(images) for pixels
    model.pixel_column                           # "pixels" or "pixels_svd": the shard column to train on
    model.config                                 # build_model(**model.config) rebuilds it

    clf = build_classifier((1, 48, 48), num_classes=7, levels=3, steps=8)   # paper 002
    clf.loss(x_uint8, y)["total"]; clf.posterior(x); clf.predict(x)
    bayes_posterior(conditional_model, x)        # Bayes' rule with a class-conditional flow

Labels are int64 in 0..num_classes-1 (emotions: anger, disgust, fear, happiness, sadness, surprise, neutral).
"""

from flowmodels.bits import bits_per_dim, bits_per_dim_bplf
from flowmodels.classifier import (
    FlowLatentClassifier,
    bayes_log_posterior,
    bayes_posterior,
    bayes_predict,
    build_classifier,
)
from flowmodels.dequantize import dequantize, to_uint8
from flowmodels.latent import ClassLatentMeans, class_mean_latents, transfer_expression
from flowmodels.model import FlowModel
from flowmodels.variants import DEFAULT_HPARAMS, VARIANTS, build_model, pixel_column

__all__ = [
    "DEFAULT_HPARAMS",
    "VARIANTS",
    "ClassLatentMeans",
    "FlowLatentClassifier",
    "FlowModel",
    "bayes_log_posterior",
    "bayes_posterior",
    "bayes_predict",
    "bits_per_dim",
    "bits_per_dim_bplf",
    "build_classifier",
    "build_model",
    "class_mean_latents",
    "dequantize",
    "pixel_column",
    "to_uint8",
    "transfer_expression",
]
