#!/usr/bin/env bash
# One GPU check, at most ~8 minutes on one GPU. Prints one line per figure ("FIGURE ..."), each naming what it
# was computed on. Run from the repository root on a GPU machine where the project environment is installed
# (`make install`), with the real datasets at $EMOFLOW_DATASETS (default ../shared/datasets):
#
#     bash bench/gpu_check.sh 2>&1 | tee gpu_check.log
#
# 1. the tests that need CUDA (pytest -m cuda: flows and bf16 on CUDA against the CPU, MTCNN on CUDA);
# 2. MTCNN face detection + alignment on CUDA (JAFFE's 213 raw images, bench/bench_faces.py);
# 3. training-step throughput on CUDA at the issue-3 architecture (48x48x1, L=3, hidden 512, batch 64):
#    glow and bplf_3x3, K=8 and 32, eager / bf16 / torch.compile / both (bench/bench_flow_throughput.py);
# 4. a 2-minute EmotionSet training (JAFFE + CK+48, bplf_3x3_svd, default architecture) through `emoflow train`:
#    test-free figures from its summary: final train bits/dim, val bits/dim, images/s, steps.
# Each part has its own time limit, so one slow part cannot eat the others' time.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
EMOFLOW=${EMOFLOW:-.venv/bin/emoflow}
export EMOFLOW_DATASETS=${EMOFLOW_DATASETS:-$(cd .. && pwd)/shared/datasets}
export MLFLOW_DISABLE_TELEMETRY=true GX_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
started=$(date +%s)
say() { echo "FIGURE $*"; }

"$PY" - <<'PY' || { echo "no CUDA device: nothing to check"; exit 2; }
import torch
assert torch.cuda.is_available()
p = torch.cuda.get_device_properties(0)
print(f"FIGURE device name={p.name!r} memory_gib={p.total_memory / 2**30:.1f} torch={torch.__version__} cuda={torch.version.cuda}")
PY

# 1. CUDA tests
timeout 120 "$PY" -m pytest -q -m cuda tests/cuda -p no:cacheprovider > "$WORK/pytest.log" 2>&1
rc=$?
say "cuda_tests rc=$rc summary=\"$(tail -1 "$WORK/pytest.log")\" command=\"pytest -m cuda tests/cuda\""

# 2. MTCNN on CUDA
timeout 90 "$PY" bench/bench_faces.py --device cuda --no-baseline --repeats 3 > "$WORK/faces.log" 2>&1
say "mtcnn_cuda rc=$? $(grep -m1 -i 'images/s\|images_per_s' "$WORK/faces.log" | tr -s ' ') data=jaffe(213 raw) command=\"bench/bench_faces.py --device cuda --no-baseline --repeats 3\""

# 3. throughput
for variant in glow bplf_3x3; do
  for k in 8 32; do
    for mode in "" "--bf16" "--compile" "--bf16 --compile"; do
      warm=1; [[ $mode == *compile* ]] && warm=3
      line=$(timeout 75 "$PY" bench/bench_flow_throughput.py --device cuda --variant $variant --steps $k \
               --iters 10 --warmup $warm $mode 2>"$WORK/tp.err" | grep '^images_per_s=' | tail -1)
      say "throughput ${line:-failed rc=$? $(tail -1 "$WORK/tp.err")} command=\"bench/bench_flow_throughput.py --device cuda --variant $variant --steps $k $mode\""
    done
  done
done

# 4. a 2-minute EmotionSet training on CUDA
"$PY" - "$WORK" <<'PY'
import sys, yaml
from pathlib import Path
from pipelines.params import PROJECT_ROOT
import os
work = Path(sys.argv[1])
raw = work / "raw"
raw.mkdir()
datasets = Path(os.environ["EMOFLOW_DATASETS"])
(raw / "jaffe").symlink_to(datasets / "jaffe")
(raw / "ckplus").symlink_to(datasets / "ckplus48")
p = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
p["data"]["raw_root"] = str(raw)
p["data"]["sources"] = ["jaffe", "ckplus"]
p["data"]["source_dirs"] = {"ckplus": "ckplus"}
p["data"]["faces"]["device"] = "cuda"
p["train"].update(device="cuda", max_steps=1_000_000, max_seconds=120, val_every=200, checkpoint_every=1000)
(work / "params.yaml").write_text(yaml.safe_dump(p))
PY
export EMOFLOW_HOME="$WORK/home"
timeout 150 "$EMOFLOW" prepare --params "$WORK/params.yaml" --summary-out "$WORK/prepare.json" > "$WORK/prepare.log" 2>&1
say "prepare rc=$? $("$PY" -c 'import json,sys; s=json.load(open(sys.argv[1])); print("shard_version=%s rows=%s" % (s["version"], s["rows"]))' "$WORK/prepare.json" 2>/dev/null) data=jaffe+ckplus48 faces=mtcnn(cuda) command=\"emoflow prepare\""
timeout 200 "$EMOFLOW" train --params "$WORK/params.yaml" --summary-out "$WORK/train.json" > "$WORK/train.log" 2>&1
rc=$?
"$PY" - "$WORK/train.json" "$rc" <<'PY'
import json, sys
from pathlib import Path
path, rc = Path(sys.argv[1]), sys.argv[2]
if not path.exists():
    print(f"FIGURE emotionset_training failed rc={rc}")
    raise SystemExit
s = json.loads(path.read_text())
final, val = s.get("final", {}), s.get("val", {})
print(
    "FIGURE emotionset_training "
    + " ".join(f"{k}={v}" for k, v in {**final, **val}.items() if isinstance(v, (int, float)))
    + f" images_per_s={s.get('images_per_s')} steps={s.get('steps')} "
    "device=cuda variant=bplf_3x3_svd data=jaffe+ckplus48 48x48 8-bit split=train/val "
    "command=\"emoflow train (train.max_seconds=120, device=cuda)\""
)
PY
say "gpu_check wall_s=$(( $(date +%s) - started ))"
