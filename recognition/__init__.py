"""The emotion judge (pure PyTorch): a mini-Xception expression classifier (``network``), its ``Trainer``
(``training``) and its use as classifier and feature extractor (``scoring``); the scoreboard's referee."""

from recognition.network import EmotionJudge, build_judge
from recognition.scoring import judge_features, predict_probabilities
from recognition.training import JudgeTrainer, balanced_class_weights, judge_from_checkpoint, judge_loss

__all__ = [
    "EmotionJudge",
    "JudgeTrainer",
    "balanced_class_weights",
    "build_judge",
    "judge_features",
    "judge_from_checkpoint",
    "judge_loss",
    "predict_probabilities",
]
