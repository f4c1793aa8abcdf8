"""NFGAN (seed paper 004): an expressive face -> the same person's frontal neutral face, pure PyTorch.

``networks`` (Tables 1-3), ``losses`` (the five losses of section 4), ``identity`` (the identity network trained on
the shards' subjects, standing in for the paper's pretrained Light CNN), ``training`` (``NFGANTrainer``: Algorithm 1,
the ``normalize`` model and checkpoints), ``dlib_identity`` (dlib's pretrained ResNet embedding, for evaluation
only). The pairs come from ``pipelines.pairs``.
"""
