import pytest
import yaml

from pipelines.params import ParamsError, load_params


def _write(tmp_path, data):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"data": data}))
    return path


def test_project_params_load():
    params = load_params()
    assert params.data.image_size == (48, 48)
    assert abs(sum(params.data.splits.values()) - 1) < 1e-9


def test_unknown_key_is_refused(tmp_path):
    with pytest.raises(ParamsError, match="imagesize"):
        load_params(_write(tmp_path, {"imagesize": [48, 48]}))


@pytest.mark.parametrize(
    "data,match",
    [
        ({"sources": ["jaffe", "affectnet"]}, "affectnet"),
        ({"image_size": [50, 50]}, "divisible"),
        ({"splits": {"train": 0.8, "val": 0.3, "test": 0.1}}, "sum to 1"),
        ({"svd": {"rank": 4, "energy": 0.9}}, "exactly one"),
        ({"folds": 1}, "folds"),
        ({"faces": {"detector": "dlib"}}, "detector"),
    ],
)
def test_invalid_values_are_refused(tmp_path, data, match):
    with pytest.raises(ParamsError, match=match):
        load_params(_write(tmp_path, data))


def test_source_dirs_and_raw_root(tmp_path):
    params = load_params(_write(tmp_path, {"raw_root": str(tmp_path), "source_dirs": {"ckplus": "ckplus48"}}))
    assert params.data.source_dir("ckplus") == tmp_path / "ckplus48"
    assert params.data.source_dir("jaffe") == tmp_path / "jaffe"


def test_shaping_excludes_runtime_settings():
    data = load_params().data
    shaping = data.source_shaping("jaffe")
    assert "batch_size" not in shaping["faces"] and "device" not in shaping["faces"]
    assert "seed" not in shaping  # splits are an assembly concern
    assert data.assembly_shaping()["seed"] == data.seed
