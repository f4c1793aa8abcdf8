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


def _project_params_with(tmp_path, path: tuple[str, ...], value):
    """The project's params.yaml with one value replaced (as a user edits it)."""
    from pipelines.params import PROJECT_ROOT

    settings = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    section = settings
    for key in path[:-1]:
        section = section[key]
    assert path[-1] in section, f"params.yaml has no {'.'.join(path)}"
    section[path[-1]] = value
    out = tmp_path / "bad.yaml"
    out.write_text(yaml.safe_dump(settings))
    return out


@pytest.mark.parametrize(
    "path,value,says",
    [
        (("train", "seed"), "abc", "train.seed: Input should be a valid integer"),
        (("data", "seed"), "abc", "data.seed: Input should be a valid integer"),
        (("data", "faces", "min_score"), "high", "data.faces.min_score: Input should be a valid number"),
        (("data", "image_size"), [44, 44], "data.image_size [44, 44]: both sides must be divisible by 2^"),
    ],
)
def test_cli_refuses_a_bad_params_file_in_one_line(tmp_path, path, value, says):
    """`emoflow prepare --params bad.yaml` stops before any work with one line naming the key and the value."""
    import subprocess
    import sys
    from pathlib import Path

    bad = _project_params_with(tmp_path, path, value)
    emoflow = Path(sys.executable).parent / "emoflow"
    proc = subprocess.run(
        [str(emoflow), "prepare", "--params", str(bad)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"emoflow: {bad.name}: {says}"), proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "data").exists()
