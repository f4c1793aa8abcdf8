"""NFGAN's run functions on real data, CPU, narrow networks, MLflow's SQLite store: a 64x64 shard set of JAFFE (seven
posers, through MTCNN) and an original-layout CK+ fixture (three subjects, sequences starting on the poser's neutral
face: the other three JAFFE posers, so no face is in both sources), 10 subject-independent folds.

The module trains and evaluates one NFGAN (the fixture ``world``, about a minute) and checks: the run, its identity
network and the registry; the evaluation's numbers against recomputations and an untrained generator; the Table 4
protocol's folds; ``emoflow normalize`` on a real photo and on one without a face; the scoreboard row; the
``nfgan_pairs`` asset and the Dagster assets the family brings; and, with the networks at 32x32, that shards of
another size are resized on load and the normalizer crops photos at the shards' size.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.pairs import NeutralPairs, neutral_pairs
from runs.context import RunContext
from runs.datasets import DatasetRef, emotionset_ref
from runs.families import family_of
from runs.nfgan import SCORE, normalizer_from_checkpoint, train_nfgan, trained_nfgan
from runs.nfgan_data import normalize_faces, require_pairs, split_pairs
from runs.nfgan_evaluation import pixel_scores
from runs.registry import CHAMPION
from runs.scoreboard import SCORE_COLUMNS, compute_scoreboard

from fixtures.model_params import tiny_model_params

JAFFE_POSERS = ("KR", "MK", "NA", "NM", "TM", "UY", "YM")  # the CK+ fixture draws KA, KL and KM
CKPLUS_SUBJECTS = 3
DLIB_FACES = 8
STEPS = 100
NFGAN = {
    # Tables 1-3 at 1/4 to 1/8 of their filters (tests/adversarial/nfgan/nfgan_settings.py's narrow networks)
    "encoder_widths": [8, 16, 32, 64],
    "encoder_hidden": 64,
    "decoder_widths": [64, 32, 16, 8],
    "discriminator_widths": [8, 16, 32, 32],
    "identity": {
        "widths": [8, 16, 16, 16],
        "embedding": 32,
        "train": {"max_steps": 30, "batch_size": 16, "lr": 0.003, "warmup_steps": 5, "checkpoint_every": 0},
    },
    "train": {"max_steps": STEPS, "batch_size": 16, "lr": 0.001, "checkpoint_every": 50, "val_every": 50},
    "evaluate": {"dlib_faces": DLIB_FACES, "strip_faces": 6, "table4_max_steps": 20},
}


def nfgan_settings(path, **changes):
    return tiny_model_params(path, nfgan={**NFGAN, **changes})


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, datasets_dir):
    from pipelines.params import AuditParams, DuplicateParams
    from pipelines.prepare import prepare

    from fixtures.layouts import build_ckplus_original, build_jaffe
    from fixtures.rawroots import data_params

    root = tmp_path_factory.mktemp("nfgan-shards")
    raw = root / "raw"
    build_jaffe(raw / "jaffe", datasets_dir, posers=JAFFE_POSERS)
    build_ckplus_original(
        raw / "ckplus", datasets_dir, subjects=CKPLUS_SUBJECTS, sequences=2, frames=5, unlabelled=0,
        frame_size=(240, 320), extras=False,
    )  # fmt: skip
    # the fixture draws a subject's sequences from the same two JAFFE faces: keep those near-copies
    audit = AuditParams(duplicates=DuplicateParams(keep_one_within_split=False, label_conflicts="keep"))
    return prepare(data_params(raw, sources=("jaffe", "ckplus"), image_size=(64, 64), audit=audit), root / "home")


@pytest.fixture(scope="module")
def world(tmp_path_factory, shards):
    root = tmp_path_factory.mktemp("nfgan")
    params = root / "params.yaml"
    settings = nfgan_settings(params)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    ctx = RunContext.create(settings, root / "home", tracking_uri=uri)
    data = emotionset_ref(shards.path)
    family = family_of("nfgan", settings)
    trained = family.train(ctx, "nfgan", data)
    evaluated = family.evaluate(ctx, trained, data)
    return SimpleNamespace(ctx=ctx, data=data, trained=trained, evaluated=evaluated, params=params, uri=uri)


def test_training_is_one_tracked_run_with_its_identity_network(world):
    trained, ctx = world.trained, world.ctx
    assert trained.registered_model == "emoflow-nfgan" and trained.model_version == "1"
    assert trained.result["steps"] == STEPS and trained.result["stopped_by"] == "max_steps"
    assert {"pixel", "perceptual", "identity", "symmetry", "adversarial", "discriminator"} <= set(
        trained.result["history"][-1]
    )
    val = trained.result["val"]
    assert val["val_l1"] < trained.result["val_history"][0]["val_l1"]  # step 100 below step 50 (other people)
    run = ctx.tracking.client().get_run(trained.run_id)
    assert run.data.tags["emoflow.family"] == "nfgan" and run.data.tags["emoflow.nfgan.face_size"] == "64x64"
    assert run.data.tags["emoflow.nfgan.resized_to"] == ""  # 64x64 shards: nothing resized
    auc = run.data.metrics["identity.verification_auc"]  # the val split's people, never trained on
    assert 0.0 <= auc <= 1.0 and "identity.ce" in run.data.metrics
    identity_checkpoint = run.data.tags["emoflow.nfgan.identity_checkpoint"]
    assert identity_checkpoint.startswith(str(ctx.home / "nfgan_identity" / world.data.version))
    model = normalizer_from_checkpoint(trained.checkpoint)
    assert model.face_size == (64, 64) and model.image_size == (64, 64)
    # nothing changed: the same run back, not trained again; `emoflow evaluate` finds it
    again = train_nfgan(ctx, "nfgan", world.data)
    assert again.reused and again.run_id == trained.run_id
    assert trained_nfgan(ctx, "nfgan", world.data).run_id == trained.run_id


def test_evaluation_scores_held_out_pairs_and_promotes_by_identity_distance(world):
    from adversarial.nfgan.networks import build_networks
    from adversarial.nfgan.training import NFGANNormalizer

    metrics, ctx = world.evaluated.metrics, world.ctx
    pairs = neutral_pairs(world.data.path)
    test = require_pairs(pairs, "test", (64, 64))
    assert metrics["test_pairs"] == pairs.split("test").num_rows == len(test.pairs)
    model = normalizer_from_checkpoint(world.trained.checkpoint)
    again = pixel_scores(test.pairs.inputs, normalize_faces(model, test.pairs.inputs, 64), test.pairs.targets)
    assert again == pytest.approx({k: metrics[k] for k in again})
    untrained = NFGANNormalizer(build_networks(ctx.settings.nfgan, seed=0)[0]).eval()
    before = pixel_scores(test.pairs.inputs, normalize_faces(untrained, test.pairs.inputs, 64), test.pairs.targets)
    # 100 narrow steps: measured L1 0.25 (untrained 0.55+), still above doing nothing (the input itself: 0.12)
    assert metrics["l1"] < 0.7 * before["l1"] and metrics["ssim"] > before["ssim"]
    assert 0 < metrics["l1_input"] < 1 and 0 < metrics["ssim_input"] <= 1
    # dlib, never trained here: an expressive face is nearer its own neutral face than other people's
    assert metrics["dlib_inputs"] == DLIB_FACES
    assert metrics["identity_distance_true_neutral"] < metrics["identity_distance_other_people"]
    assert 0 < metrics[SCORE.metric] < 1.5 and 0 <= metrics["same_person_rate"] <= 1
    run = world.trained.run_id
    folder = ctx.tracking.run_artifacts_dir(run) / "evaluation"
    distances = json.loads((folder / "identity_distances.json").read_text())
    assert len(distances["output"]) == DLIB_FACES and len(distances["true_neutral"]) >= DLIB_FACES
    assert np.median(distances["output"]) == pytest.approx(metrics[SCORE.metric])
    for figure in ("normalization", "identity_distances", "table4"):
        assert (folder / f"{figure}.png").stat().st_size > 5000 and figure in world.evaluated.figures
    strip = Image.open(folder / "normalization.png")
    assert strip.height > strip.width  # six rows of input | normalized | true neutral
    champion = ctx.tracking.version_by_alias("emoflow-nfgan", CHAMPION)
    assert str(champion.version) == "1" and world.evaluated.promotion["reason"] == "no champion yet"
    assert float(champion.tags[f"eval.{SCORE.metric}"]) == pytest.approx(metrics[SCORE.metric], abs=1e-6)


def test_table4_trains_both_arms_on_subject_independent_folds(world):
    metrics = world.evaluated.metrics
    folder = world.ctx.tracking.run_artifacts_dir(world.trained.run_id) / "evaluation"
    table = json.loads((folder / "table4.json").read_text())
    assert [r["source"] for r in table["results"]] == ["ckplus"] and "mmi: not in the shard set" in table["notes"]
    result = table["results"][0]
    without, with_ = result["without"], result["with_normalized"]
    assert metrics["table4_ckplus_folds"] == CKPLUS_SUBJECTS == len(without["accuracies"])  # one person a fold
    assert without["subjects_per_fold"] == with_["subjects_per_fold"]
    people = [set(s) for s in without["subjects_per_fold"]]
    assert all(not (a & b) for i, a in enumerate(people) for b in people[i + 1 :])
    assert sum(without["fold_sizes"]) == CKPLUS_SUBJECTS * 2 * 4  # neutral first frame + 3 last frames a sequence
    # each fold adds one normalized face per expressive face of the other folds' people (2 people x 6)
    assert result["normalized_faces_added"] == [12] * CKPLUS_SUBJECTS
    differences = np.asarray(with_["accuracies"]) - np.asarray(without["accuracies"])
    assert result["differences"] == pytest.approx(differences.tolist())
    assert metrics["table4_ckplus_difference_mean"] == pytest.approx(differences.mean())
    assert metrics["table4_ckplus_difference_std"] == pytest.approx(differences.std())
    assert all(0 <= a <= 1 for a in without["accuracies"] + with_["accuracies"])


def _cli(world, monkeypatch, *args):
    from pipelines.cli import main

    monkeypatch.setenv("EMOFLOW_HOME", str(world.ctx.home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world.uri)
    return main(["normalize", "--params", str(world.params), *args])


def test_normalize_writes_every_face_and_says_when_there_is_none(world, datasets_dir, tmp_path, monkeypatch, capsys):
    photos = datasets_dir / "faces"
    out = tmp_path / "out"
    argv = ["--model", "models:/emoflow-nfgan@champion", str(photos / "obama.jpg"), str(photos / "no-faces.jpg")]
    assert _cli(world, monkeypatch, *argv, "--out", str(out)) == 0
    report = json.loads(capsys.readouterr().out)
    obama, none = report["photos"]
    assert len(obama["faces"]) >= 1 and none["faces"] == [] and "no face found" in none["reason"]
    face = obama["faces"][0]
    pair = np.asarray(Image.open(face["side_by_side"]))
    neutral = np.asarray(Image.open(face["normalized"]))
    assert pair.shape == (64, 64 + 2 + 64) and neutral.shape == (64, 64)
    assert np.array_equal(pair[:, -64:], neutral) and (pair[:, 64:66] == 255).all()
    # the registered model is the checkpoint's normalizer: the same face gives the same neutral face
    model = normalizer_from_checkpoint(world.trained.checkpoint)
    again = model(torch.from_numpy(np.ascontiguousarray(pair[:, :64]))[None, None])[0, 0].numpy()
    assert np.array_equal(again, neutral)

    checkpoint = ["--checkpoint", world.trained.checkpoint, str(photos / "no-faces.jpg")]
    assert _cli(world, monkeypatch, *checkpoint, "--out", str(tmp_path / "none")) == 1
    captured = capsys.readouterr()
    assert "no-faces.jpg: no face found" in captured.err and json.loads(captured.out)["faces"] == 0


def test_the_scoreboard_row_says_what_applies_to_a_normalizer(world):
    board = compute_scoreboard(world.ctx, world.data)
    (row,) = [r for r in board.rows if r["model"] == "emoflow-nfgan"]
    assert all(row[c] is None for c in SCORE_COLUMNS)  # no density, no classes, no generation by emotion
    assert 0 < row["nfgan_identity_distance"] < 1.5 and 0 <= row["nfgan_same_person_rate"] <= 1
    assert row["nfgan_faces"] == min(DLIB_FACES, len(world.data.load("test")))
    assert "nfgan_neutral_rate" not in row  # no champion judge in this registry


def test_the_pairs_asset_and_the_familys_assets(world, shards, tmp_path):
    from dagster import DagsterInstance

    from assets.definitions import build_definitions
    from assets.runner import materialize_keys

    defs = build_definitions(world.ctx.settings, tmp_path / "home", world.uri)
    keys = {key.to_user_string() for a in defs.assets for key in a.keys}
    assert {"nfgan_pairs", "train_nfgan", "evaluate_nfgan"} <= keys
    with DagsterInstance.ephemeral() as instance:
        config = {"ops": {"nfgan_pairs": {"config": {"shards": str(shards.path)}}}}
        result = materialize_keys(defs, ["nfgan_pairs"], instance, run_config=config, raise_on_error=True)
    metadata = result.asset_materializations_for_node("nfgan_pairs")[0].metadata
    pairs = neutral_pairs(shards.path)
    assert metadata["pairs"].value == pairs.table.num_rows and metadata["shard_version"].value == shards.version
    rows = metadata["counts"].value.records
    assert len(rows) == 2 * 3  # jaffe and ckplus x train, val, test
    assert {(r.data["source"], r.data["split"]): r.data["pairs"] for r in rows} == {
        (s, split): n for s, by_split in pairs.counts().items() for split, n in by_split.items()
    }
    written = tmp_path / "home" / "nfgan_pairs" / shards.version / "pairs.parquet"
    assert written.exists() and result.output_for_node("nfgan_pairs") == str(written)


def test_shards_of_another_size_are_resized_and_photos_cropped_at_the_shards_size(
    world, shards, datasets_dir, tmp_path
):
    """The networks at 32x32 on the 64x64 shards: what happens to the project's default 48x48 shards at 64x64."""
    from runs.normalize import normalize_photos

    found = neutral_pairs(shards.path)
    small = split_pairs(found, "val", (32, 32))
    assert small.pairs.image_shape == (1, 32, 32) and small.pairs.name.endswith("@32x32")
    settings = nfgan_settings(tmp_path / "params.yaml", image_size=[32, 32], train={**NFGAN["train"], "max_steps": 10})
    ctx = RunContext.create(settings, tmp_path / "home", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    trained = train_nfgan(ctx, "nfgan", world.data)
    tags = ctx.tracking.client().get_run(trained.run_id).data.tags
    assert tags["emoflow.nfgan.face_size"] == "64x64" and tags["emoflow.nfgan.resized_to"] == "32x32"
    model = ctx.tracking.load_model(f"models:/emoflow-nfgan/{trained.model_version}")
    assert model.face_size == (64, 64) and model.image_size == (32, 32)
    report = normalize_photos(ctx, model, [str(datasets_dir / "faces" / "obama.jpg")], tmp_path / "out")
    assert report["face_size"] == [64, 64] and report["faces"] >= 1
    assert np.asarray(Image.open(report["photos"][0]["faces"][0]["normalized"])).shape == (32, 32)


def test_data_without_pairs_is_refused_with_what_to_do(world, shards):
    found = neutral_pairs(shards.path)
    empty = NeutralPairs(found.table.slice(0, 0), found.shard_set, ("ckplus",))
    with pytest.raises(ValueError, match="no train pairs.*JAFFE, CK\\+ in its original layout"):
        require_pairs(empty, "train", (64, 64))
    with pytest.raises(ValueError, match="not mnist"):
        train_nfgan(world.ctx, "nfgan", DatasetRef("mnist", "v", "/nowhere", (1, 32, 32)))
