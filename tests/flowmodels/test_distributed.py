"""Two CPU processes under torchrun (gloo) train exactly alike, and like one process with the same global batch.

The entry point is run as a user would run it: ``python -m torch.distributed.run --nproc_per_node 2 -m
flowmodels.train_main ...`` on real MNIST digits (a conditional tiny Glow). Every rank writes the sha256 and the
tensors of its final weights (``--state-dir``); the single-process reference is the same entry point, called
in-process with the same arguments.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training_data import one_thread  # noqa: F401 (autouse fixture)

from flowmodels.layers.actnorm import ActNorm
from flowmodels.train_main import main as train_main
from flowmodels.training import model_from_checkpoint
from training import load_checkpoint

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG = {
    "batch_size": 16,  # global: 8 per rank
    "max_steps": 6,
    "warmup_steps": 2,
    "lr": 1e-3,
    "checkpoint_every": 3,
    "log_every": 1,
    "val_every": 3,
    "init_batch": 32,
    "seed": 0,
}
HPARAMS = {"levels": 2, "steps": 2, "hidden": 16}
# Rounding differs between 2 x (mean of 8) averaged and the mean of 16, and between thread counts; Adam(ax)
# turns gradient differences into update differences of the same relative size. Observed: ~1e-7.
WEIGHT_TOL = 1e-4
BPD_TOL = 1e-4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def entry_args(datasets_dir: Path, run_dir: Path) -> list[str]:
    return [
        "--mnist",
        str(datasets_dir / "mnist"),
        "--variant",
        "glow",
        "--limit-train",
        "256",
        "--limit-val",
        "64",
        "--checkpoint-dir",
        str(run_dir / "ckpt"),
        "--config",
        json.dumps(CONFIG),
        "--hparams",
        json.dumps(HPARAMS),
        "--out",
        str(run_dir / "result.json"),
        "--state-dir",
        str(run_dir / "state"),
    ]


def run_torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "flowmodels.train_main",
        *args,
    ]
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


def test_two_gloo_ranks_end_identical_and_equal_to_one_process(datasets_dir, tmp_path):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    proc = run_torchrun(entry_args(datasets_dir, ddp_dir))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    # the two ranks: bit-identical weights
    digests = [json.loads((ddp_dir / "state" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [d["rank"] for d in digests] == [0, 1] and all(d["world_size"] == 2 and d["steps"] == 6 for d in digests)
    assert digests[0]["sha256"] == digests[1]["sha256"]
    rank0 = torch.load(ddp_dir / "state" / "rank-0.pt", weights_only=True)
    rank1 = torch.load(ddp_dir / "state" / "rank-1.pt", weights_only=True)
    assert max_diff(rank0, rank1) == 0.0
    # actnorm was initialised once (rank 0) and arrived initialised on rank 1 through DDP's broadcast
    flags = [k for k in rank1 if k.endswith(".initialized")]
    assert flags and all(bool(rank1[k]) for k in flags)

    result = json.loads((ddp_dir / "result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 6 and result["initialization"] == "data"
    assert result["state_sha256"] == digests[0]["sha256"]
    assert sorted(p.name for p in (ddp_dir / "ckpt").iterdir()) == ["last.pt", "step-0000003.pt", "step-0000006.pt"]
    assert load_checkpoint(ddp_dir / "ckpt" / "last.pt")["world_size"] == 2

    # one process, same global batch: the same training within float tolerance
    assert train_main(entry_args(datasets_dir, single_dir)) == 0
    single = json.loads((single_dir / "result.json").read_text())
    assert single["world_size"] == 1
    reference = torch.load(single_dir / "state" / "rank-0.pt", weights_only=True)
    assert max_diff(rank0, reference) <= WEIGHT_TOL
    assert [h["step"] for h in result["history"]] == [h["step"] for h in single["history"]] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(result["history"], single["history"]):
        assert a["bpd"] == pytest.approx(b["bpd"], abs=BPD_TOL) and a["lr"] == b["lr"]
    for a, b in zip(result["val_history"], single["val_history"]):
        assert a["step"] == b["step"] and a["val_bpd"] == pytest.approx(b["val_bpd"], abs=BPD_TOL)

    # the distributed checkpoint is an ordinary one
    model = model_from_checkpoint(ddp_dir / "ckpt" / "last.pt")
    assert all(bool(m.initialized) for m in model.modules() if isinstance(m, ActNorm))
