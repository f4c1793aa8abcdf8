"""`dvc repro` in a temporary copy of the project: prepare → train → evaluate end to end (tiny models: the default
flow, the judge, BiCoGAN, NFGAN, then the scoreboard), the same shard version as the Python/Dagster path, metrics
and plots that `dvc metrics show` / `dvc plots show` read. JAFFE beside CK+48: NFGAN needs neutral faces of the
same people, which CK+48 lacks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pipelines.params import load_params
from pipelines.prepare import prepare

from fixtures.rawroots import make_raw_root
from fixtures.tiny_params import write_tiny_params

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def copy_project(target: Path) -> Path:
    """Tracked and untracked-but-not-ignored files: what a fresh clone (plus the work in progress) holds."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        src = PROJECT_ROOT / rel
        if src.is_file():
            dst = target / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    # a clone is a git repository (DVC's default mode needs one)
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    return target


def dvc_env() -> dict:
    # the copy's own params.yaml and data/ home, and its own MLflow store under data/
    drop = ("EMOFLOW_HOME", "EMOFLOW_PARAMS", "DAGSTER_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args], cwd=project, env=dvc_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_dvc_repro_runs_prepare_train_evaluate(tmp_path, datasets_dir):
    raw = make_raw_root(tmp_path / "raw", datasets_dir)
    project = copy_project(tmp_path / "project")
    write_tiny_params(project / "params.yaml", raw, ["jaffe", "ckplus"], max_steps=20)

    dvc(project, "repro")
    data = project / "data"
    summary = json.loads((data / "shards-summary.json").read_text())
    assert summary["rows"] == 927 + 213
    assert summary["quarantined"] == {"ckplus": {"label_outside_scheme": 54}, "jaffe": {}}
    assert (data / "shards" / summary["version"] / "manifest.json").exists()
    assert (project / "dvc.lock").exists()
    python_built = prepare(load_params(project / "params.yaml").data, tmp_path / "home")
    assert python_built.version == summary["version"]  # same params and raw data, same version, whichever path

    trained = json.loads((data / "metrics" / "train.json").read_text())
    assert trained["steps"] == 20 and trained["model_version"] == "1"
    metrics = json.loads((data / "metrics.json").read_text())
    assert 1.0 < metrics["test_bpd"] < 8.0 and 0.0 <= metrics["test_accuracy"] <= 1.0
    curve = (data / "plots" / "bpd_curve.csv").read_text().splitlines()
    assert curve[0] == "step,bpd" and len(curve) > 3
    confusion = (data / "plots" / "confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) - 1 == int(metrics["test_images"])
    judge = json.loads((data / "metrics" / "judge.json").read_text())
    assert 0.0 <= judge["test_accuracy"] <= 1.0
    gan = json.loads((data / "metrics" / "bicogan.json").read_text())
    assert gan["test_frechet_judge_distance"] > 0 and 0.0 <= gan["test_label_agreement"] <= 1.0
    board = json.loads((data / "metrics" / "scoreboard.json").read_text())
    assert abs(board["emoflow-judge.accuracy"] - judge["test_accuracy"]) < 1e-9
    assert {"emoflow-bplf_3x3_svd.bpd_raw", "emoflow-bicogan.frechet_judge_distance"} <= set(board)
    # the stages call the run functions directly: tracked in MLflow, no Dagster run started
    assert (data / "mlflow.db").exists() and not (data / "dagster").exists()

    again = dvc(project, "repro")
    assert "didn't change" in again.stdout or "skipping" in again.stdout.lower()
    status = dvc(project, "status")
    assert "up to date" in status.stdout.lower() or status.stdout.strip() == ""

    shown = dvc(project, "metrics", "show")
    for expected in ("data/metrics.json", "test_bpd", f"{metrics['test_bpd']:.5f}"[:6], "rows", "1140"):
        assert expected in shown.stdout, shown.stdout
    plots = dvc(project, "plots", "show", "--json")
    assert "data/plots/bpd_curve.csv" in plots.stdout and "data/plots/confusion.csv" in plots.stdout
