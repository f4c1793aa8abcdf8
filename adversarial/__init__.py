"""Adversarial model families (pure PyTorch: no Dagster, no MLflow), beside the flows of ``flowmodels``.

- ``adversarial.nfgan``: NFGAN's encoder, decoder and discriminator and their losses.
- ``adversarial.bicogan``: the Bidirectional Conditional GAN of the seed paper "Generating Realistic Facial
  Expressions with Bidirectional Conditional GAN" (after Jaiswal et al., BiCoGAN): a generator G(z, c), an
  encoder E(x) -> (z, c) and a discriminator on joint (x, [z, c]) tuples, trained through ``training.loop``.
"""
