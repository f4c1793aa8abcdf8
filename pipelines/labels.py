"""One canonical 7-emotion scheme, and one explicit mapping table per dataset.

Index 0..6 = anger, disgust, fear, happiness, sadness, surprise, neutral (the order of Ekman's six followed by
neutral, as in the BPLF paper's Table 1). Every dataset writes its labels its own way; each table below maps
the label *exactly as the dataset writes it* (``RawRecord.source_label``) to a canonical name, or to
``OUTSIDE_SCHEME`` for a label the dataset knows but the scheme has no place for (CK+ contempt).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

EMOTIONS: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
EMOTION_INDEX: dict[str, int] = {name: i for i, name in enumerate(EMOTIONS)}
NUM_EMOTIONS = len(EMOTIONS)

OUTSIDE_SCHEME = "<outside-scheme>"
_CONTEMPT = OUTSIDE_SCHEME + "contempt"

# JAFFE file names: <poser>.<EXPR><n>.<id>.tiff
JAFFE_LABELS: dict[str, str] = {
    "AN": "anger",
    "DI": "disgust",
    "FE": "fear",
    "HA": "happiness",
    "NE": "neutral",
    "SA": "sadness",
    "SU": "surprise",
}

# CK+ original Emotion/*.txt codes (ReadMeCohnKanadeDatabase_website.txt), written as floats ("3.0000000e+00");
# the reader normalises them to the integer's string ("3"). Also the CK+48 crop-layout folder names.
CKPLUS_LABELS: dict[str, str] = {
    "0": "neutral",
    "1": "anger",
    "2": _CONTEMPT,
    "3": "disgust",
    "4": "fear",
    "5": "happiness",
    "6": "sadness",
    "7": "surprise",
    # CK+48 folders
    "neutral": "neutral",
    "anger": "anger",
    "contempt": _CONTEMPT,
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happiness",
    "sadness": "sadness",
    "surprise": "surprise",
}

# FER2013: the original CSV's codes (verified against the Kaggle JPEGs, see the dataset's PROVENANCE) and the
# Kaggle image layout's folder names.
FER2013_LABELS: dict[str, str] = {
    "0": "anger",
    "1": "disgust",
    "2": "fear",
    "3": "happiness",
    "4": "sadness",
    "5": "surprise",
    "6": "neutral",
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happiness",
    "sad": "sadness",
    "surprise": "surprise",
    "neutral": "neutral",
}

# MMI: session metadata's Emotion value (1..6, the six basic emotions in Ekman's order) and, for CK+-style
# restructured copies, the expression names used in their CSVs.
MMI_LABELS: dict[str, str] = {
    "1": "anger",
    "2": "disgust",
    "3": "fear",
    "4": "happiness",
    "5": "sadness",
    "6": "surprise",
    "anger": "anger",
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happiness": "happiness",
    "happy": "happiness",
    "sadness": "sadness",
    "sad": "sadness",
    "surprise": "surprise",
    "neutral": "neutral",
}

# BU-EEG metadata CSV: the six prototypical expressions, by name (matched case-insensitively by the reader,
# which lower-cases before lookup).
BUEEG_LABELS: dict[str, str] = {
    "anger": "anger",
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happiness": "happiness",
    "happy": "happiness",
    "sadness": "sadness",
    "sad": "sadness",
    "surprise": "surprise",
}

LABEL_TABLES: dict[str, Mapping[str, str]] = {
    "jaffe": JAFFE_LABELS,
    "ckplus": CKPLUS_LABELS,
    "fer2013": FER2013_LABELS,
    "mmi": MMI_LABELS,
    "bueeg": BUEEG_LABELS,
}


@dataclass(frozen=True)
class LabelDecision:
    """The outcome of harmonising one source label."""

    label: int | None  # canonical index, or None when the row must be quarantined
    label_name: str | None
    reason: str | None = None  # quarantine reason code when label is None
    detail: str | None = None


def harmonize_label(source: str, source_label: str | None, outside_policy: Mapping[str, str]) -> LabelDecision:
    """Map one dataset label to the canonical scheme.

    ``outside_policy`` maps a label name outside the scheme (e.g. ``"contempt"``) to ``"quarantine"`` (the
    default for anything not listed) or to a canonical emotion name to map it to.
    """
    from pipelines.records import QuarantineReason

    table = LABEL_TABLES.get(source)
    if table is None:
        raise KeyError(f"no label table for source {source!r}; known: {sorted(LABEL_TABLES)}")
    if source_label is None:
        return LabelDecision(None, None, QuarantineReason.MISSING_LABEL_FILE, "row has no label")
    name = table.get(source_label)
    if name is None:
        return LabelDecision(
            None,
            None,
            QuarantineReason.UNKNOWN_LABEL,
            f"{source} label {source_label!r} is not in the {source} mapping table",
        )
    if name.startswith(OUTSIDE_SCHEME):
        outside = name[len(OUTSIDE_SCHEME) :]
        target = outside_policy.get(outside, "quarantine")
        if target == "quarantine":
            return LabelDecision(
                None,
                None,
                QuarantineReason.LABEL_OUTSIDE_SCHEME,
                f"{source} label {source_label!r} ({outside}) is outside the 7-emotion scheme "
                f"(params data.labels.outside_scheme.{outside}: quarantine)",
            )
        if target not in EMOTION_INDEX:
            raise ValueError(
                f"params data.labels.outside_scheme.{outside} = {target!r}: must be 'quarantine' or one of {EMOTIONS}"
            )
        name = target
    return LabelDecision(EMOTION_INDEX[name], name)
