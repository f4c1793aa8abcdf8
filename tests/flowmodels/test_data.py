"""``ImageSet`` loaders on real data: a CK+48 shard set built with ``pipelines.prepare`` (no face detection, a
couple of seconds), and MNIST's idx files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from training_data import one_thread  # noqa: F401 (autouse fixture)

from flowmodels.data import ImageSet, load_mnist_split, load_shard_split
from flowmodels.training import build_seeded_model, train
from pipelines.labels import EMOTIONS
from pipelines.params import SvdParams, TrainParams
from pipelines.prepare import prepare
from pipelines.readers.mnist import load_mnist
from pipelines.shards import decode_pixels, read_shards
from pipelines.svd import truncate_singular_values

from fixtures.rawroots import data_params, make_raw_root

CK48_ROWS = 927  # CK+48 in the 7-emotion scheme (54 contempt images quarantined)


@pytest.fixture(scope="module")
def ck_shards(tmp_path_factory, datasets_dir):
    tmp = tmp_path_factory.mktemp("shards")
    raw = make_raw_root(tmp / "raw", datasets_dir)
    shard_set = prepare(data_params(raw, sources=("ckplus",)), tmp / "home")
    return shard_set


def test_load_shard_split_reads_every_row_of_a_split(ck_shards):
    path = ck_shards.path
    sets = {split: load_shard_split(path, split) for split in ("train", "val", "test")}
    assert sum(len(s) for s in sets.values()) == CK48_ROWS == ck_shards.manifest["rows"]
    for split, s in sets.items():
        assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (1, 48, 48)
        assert s.labels.dtype == torch.int64 and 0 <= int(s.labels.min()) and int(s.labels.max()) < 7
        assert s.class_names == EMOTIONS
        assert s.name == f"emotionset/{path.name}/{split}"
        assert len(set(s.ids)) == len(s)
        # the same pixels and labels as the Arrow table, row for row
        table = read_shards(path, splits=[split], columns=["pixels", "label", "id"])
        assert table.column("id").to_pylist() == s.ids
        assert np.array_equal(decode_pixels(table.column("pixels"), 48, 48), s.images[:, 0].numpy())
        assert table.column("label").to_numpy().tolist() == s.labels.tolist()
        assert s.images.float().std() > 20  # real faces
    # subject-independent splits: no id in two splits
    assert not set(sets["train"].ids) & set(sets["test"].ids)


def test_load_shard_split_columns_sources_and_the_shards_root(ck_shards):
    path = ck_shards.path
    plain = load_shard_split(path, "test")
    svd = load_shard_split(path, "test", column="pixels_svd")
    assert svd.ids == plain.ids and torch.equal(svd.labels, plain.labels)
    assert not torch.equal(svd.images, plain.images)
    assert (svd.images.float() - plain.images.float()).abs().mean() < 12  # a truncation, not other images
    via_root = load_shard_split(path.parent, "test")  # the shards root: its "current" file names the version
    assert via_root.ids == plain.ids
    assert len(load_shard_split(path, "test", sources=["ckplus"])) == len(plain)
    empty = load_shard_split(path, "test", sources=["jaffe"])
    assert len(empty) == 0 and empty.images.shape == (0, 1, 48, 48)
    with pytest.raises(ValueError, match="column"):
        load_shard_split(path, "test", column="label")


def test_a_few_training_steps_on_the_shards(ck_shards, tmp_path):
    train_set = load_shard_split(ck_shards.path, "train", column="pixels_svd")
    val_set = load_shard_split(ck_shards.path, "val", column="pixels_svd")
    model = build_seeded_model(0, "bplf_3x3_svd", (1, 48, 48), 7, levels=2, steps=1, hidden=8)
    assert model.pixel_column == "pixels_svd"
    config = TrainParams(batch_size=16, max_steps=2, log_every=1, init_batch=32, checkpoint_every=0)
    result = train(model, train_set, val_set, config, tmp_path)
    assert result.steps == 2 and 0 < result.val["val_bpd"] < 16


def test_load_mnist_split_pads_to_32(datasets_dir):
    test = load_mnist_split(datasets_dir / "mnist", "test")
    images, labels = load_mnist(datasets_dir / "mnist", "test")
    assert test.images.shape == (10000, 1, 32, 32) and test.images.dtype == torch.uint8
    assert np.array_equal(test.images[:, 0, 2:30, 2:30].numpy(), images)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert int(test.images[:, 0][:, border].max()) == 0
    assert test.labels.tolist() == labels.tolist() and test.class_names == tuple("0123456789")
    assert test.name == "mnist/test"
    assert load_mnist_split(datasets_dir / "mnist", "test", pad_to=None).images.shape == (10000, 1, 28, 28)
    with pytest.raises(ValueError, match="splits"):
        load_mnist_split(datasets_dir / "mnist", "val")
    # what the _svd variants train on: rank-truncated digits, padded after truncation
    svd = load_mnist_split(datasets_dir / "mnist", "test", column="pixels_svd", svd=SvdParams(rank=4))
    assert svd.name == "mnist/test/svd-rank4" and svd.images.shape == test.images.shape
    assert int(svd.images[:, 0][:, border].max()) == 0
    assert not torch.equal(svd.images, test.images)
    assert np.array_equal(svd.images[:, 0, 2:30, 2:30].numpy(), truncate_singular_values(images, rank=4))
    tail = torch.linalg.svdvals(svd.images[:50, 0].double())[:, 4:].square().sum(1)
    full_tail = torch.linalg.svdvals(test.images[:50, 0].double())[:, 4:].square().sum(1)
    assert tail.sum() < 0.2 * full_tail.sum()  # the energy beyond rank 4 mostly gone (uint8 rounding, clipping)


def test_image_set_checks_and_subsets():
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(images.float(), None, "x", None)
    with pytest.raises(ValueError, match="labels must have shape"):
        ImageSet(images, torch.zeros(3, dtype=torch.long), "x", None)
    with pytest.raises(ValueError, match="beyond"):
        ImageSet(images, torch.tensor([0, 1, 2, 3]), "x", ("a", "b"))
    s = ImageSet(images, torch.tensor([0, 1, 1, 0], dtype=torch.int8), "x", ("a", "b"), ["p", "q", "r", "s"])
    assert s.labels.dtype == torch.int64
    sub = s.subset(torch.tensor([3, 1]))
    assert sub.ids == ["s", "q"] and sub.labels.tolist() == [0, 1] and len(sub) == 2
    assert s.fingerprint() == ImageSet(images.clone(), s.labels.clone(), "x", ("a", "b")).fingerprint()
    assert s.fingerprint() != s.subset(slice(0, 3)).fingerprint()
