"""`dvc repro` in a temporary copy of the project builds the same shard version as the Python/Dagster path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipelines.prepare import prepare

from fixtures.rawroots import data_params, make_raw_root

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
    env = {k: v for k, v in os.environ.items() if k not in ("EMOFLOW_HOME", "EMOFLOW_PARAMS")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args], cwd=project, env=dvc_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_dvc_repro_builds_the_same_version_as_python(tmp_path, datasets_dir):
    raw = make_raw_root(tmp_path / "raw", datasets_dir)
    project = copy_project(tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["raw_root"] = str(raw)
    params["data"]["sources"] = ["ckplus"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    dvc(project, "repro", "prepare")
    summary = json.loads((project / "data" / "shards-summary.json").read_text())
    assert summary["rows"] == 927 and summary["quarantined"] == {"ckplus": {"label_outside_scheme": 54}}
    assert (project / "data" / "shards" / summary["version"] / "manifest.json").exists()
    assert (project / "dvc.lock").exists()

    python_built = prepare(data_params(raw, sources=("ckplus",)), tmp_path / "home")
    assert python_built.version == summary["version"]

    again = dvc(project, "repro", "prepare")
    assert "didn't change" in again.stdout or "skipping" in again.stdout.lower()
    status = dvc(project, "status", "prepare")
    assert "up to date" in status.stdout.lower() or status.stdout.strip() == ""

    metrics = dvc(project, "metrics", "show")
    assert "rows" in metrics.stdout and "927" in metrics.stdout
