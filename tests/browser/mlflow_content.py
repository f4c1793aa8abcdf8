"""Writes what the MLflow UI test looks for, through emoflow's own tracking resource (assets/tracking.py).

Run as a script (its own process: MLflow's tracking URI and active run are process-global), by the
``mlflow_content`` fixture::

    python tests/browser/mlflow_content.py HOME OUT.json

Under HOME (an EMOFLOW_HOME) it creates, in the SQLite store HOME/mlflow.db:
- experiment "emoflow" with two runs, each logging a tiny Glow (flowmodels.build_model) and a test bits/dim;
- registered model ``emoflow-glow``: version 1 promoted to ``champion`` (no champion yet), version 2 holding
  ``candidate`` and not promoted (worse bits/dim than the champion).
What it made (names, ids, versions, aliases as the registry reports them) is written to OUT.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

VARIANT = "glow"


def main(home: Path, out: Path) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import torch

    from assets.tracking import CANDIDATE, CHAMPION, MlflowTracking, registered_name
    from flowmodels import build_model

    torch.manual_seed(0)
    tracking = MlflowTracking(home=str(home), tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    mlflow = tracking._mlflow()
    x = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)

    runs = []
    decisions = []
    champion_bpd = None
    for i, bump in enumerate((0.0, 1.0), start=1):
        model = build_model(VARIANT, (1, 8, 8), levels=1, steps=1, hidden=8)
        with torch.no_grad():
            bpd = float(model.bits_per_dim(x).mean()) + bump
        run_name = f"browser-test-{VARIANT}-{i}"
        with tracking.start_run(run_name, tags={"emoflow.variant": VARIANT, "emoflow.test": "browser"}) as run:
            mlflow.log_params({"levels": 1, "steps": 1, "hidden": 8, "image_shape": "1x8x8"})
            mlflow.log_metric("test_bpd", bpd)
            version = tracking.log_flow_model(model, VARIANT, run.info.run_id, tags={"emoflow.run_name": run_name})
        decision = tracking.promote_if_better(VARIANT, version.version, bpd, "test", champion_bpd=champion_bpd)
        if decision.promoted:
            champion_bpd = bpd
        runs.append({"run_id": run.info.run_id, "run_name": run_name, "version": str(version.version), "test_bpd": bpd})
        decisions.append({"version": decision.version, "promoted": decision.promoted, "reason": decision.reason})

    client = tracking.client()
    name = registered_name(VARIANT)
    aliases = client.get_registered_model(name).aliases  # alias -> version
    result = {
        "tracking_uri": tracking.uri(),
        "experiment": tracking.experiment,
        "experiment_id": tracking.experiment_id(),
        "registered_model": name,
        "runs": runs,
        "decisions": decisions,
        "aliases": {alias: str(v) for alias, v in aliases.items()},
        "candidate": CANDIDATE,
        "champion": CHAMPION,
    }
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]))
