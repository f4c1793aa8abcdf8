import pytest

from pipelines.labels import EMOTIONS, LABEL_TABLES, harmonize_label


def test_scheme_order_is_the_documented_one():
    assert EMOTIONS == ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")


def test_every_table_maps_into_the_scheme_or_outside_it():
    for source, table in LABEL_TABLES.items():
        for key in table:
            decision = harmonize_label(source, key, {"contempt": "quarantine"})
            assert decision.label is not None or decision.reason == "label_outside_scheme", (source, key)


@pytest.mark.parametrize(
    "source,label,name",
    [
        ("jaffe", "HA", "happiness"),
        ("jaffe", "NE", "neutral"),
        ("ckplus", "0", "neutral"),
        ("ckplus", "1", "anger"),
        ("ckplus", "3", "disgust"),
        ("ckplus", "happy", "happiness"),
        ("fer2013", "0", "anger"),
        ("fer2013", "4", "sadness"),
        ("fer2013", "6", "neutral"),
        ("fer2013", "sad", "sadness"),
        ("mmi", "4", "happiness"),
        ("bueeg", "surprise", "surprise"),
    ],
)
def test_documented_codes(source, label, name):
    decision = harmonize_label(source, label, {})
    assert decision.label_name == name and decision.label == EMOTIONS.index(name)


def test_contempt_is_quarantined_by_default_and_mapped_on_request():
    for code in ("2", "contempt"):
        q = harmonize_label("ckplus", code, {"contempt": "quarantine"})
        assert q.label is None and q.reason == "label_outside_scheme" and "contempt" in q.detail
        assert harmonize_label("ckplus", code, {}).reason == "label_outside_scheme"
        mapped = harmonize_label("ckplus", code, {"contempt": "disgust"})
        assert mapped.label_name == "disgust"


def test_unknown_and_missing_labels_are_quarantine_decisions():
    assert harmonize_label("fer2013", "9", {}).reason == "unknown_label"
    assert harmonize_label("ckplus", None, {}).reason == "missing_label_file"
    with pytest.raises(ValueError, match="contempt"):
        harmonize_label("ckplus", "2", {"contempt": "smugness"})
