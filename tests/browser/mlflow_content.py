"""Writes what the MLflow UI test looks for, through emoflow's own tracking and registry code (runs.tracking,
runs.registry).

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

    from flowmodels import build_model
    from pipelines.params import TrackingParams
    from runs.flows import SCORE
    from runs.registry import CANDIDATE, CHAMPION, decide, registered_model_name
    from runs.tracking import Tracking, image_signature

    torch.manual_seed(0)
    tracking = Tracking.from_settings(
        TrackingParams(experiment="emoflow", system_metrics_seconds=None), home, f"sqlite:///{home / 'mlflow.db'}"
    )
    mlflow = tracking.mlflow()
    x = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)
    name = registered_model_name(VARIANT)

    runs = []
    decisions = []
    champion_version, champion_bpd = None, None
    for i, bump in enumerate((0.0, 1.0), start=1):
        model = build_model(VARIANT, (1, 8, 8), levels=1, steps=1, hidden=8)
        with torch.no_grad():
            bpd = float(model.bits_per_dim(x).mean()) + bump
        run_name = f"browser-test-{VARIANT}-{i}"
        with tracking.start_run(run_name, tags={"emoflow.variant": VARIANT, "emoflow.test": "browser"}) as run:
            mlflow.log_params({"levels": 1, "steps": 1, "hidden": 8, "image_shape": "1x8x8"})
            mlflow.log_metric("test.test_bpd", bpd)
            version, _ = tracking.log_model(
                model, name, image_signature((1, 8, 8), "bits_per_dim", ()), tags={"emoflow.run_name": run_name}
            )
        decision = decide(name, str(version.version), SCORE, bpd, "test", champion_version, champion_bpd)
        if decision.promoted:
            tracking.set_alias(name, CHAMPION, decision.version)
            champion_version, champion_bpd = decision.version, bpd
        runs.append({"run_id": run.info.run_id, "run_name": run_name, "version": str(version.version), "test_bpd": bpd})
        decisions.append({"version": decision.version, "promoted": decision.promoted, "reason": decision.reason})

    aliases = tracking.client().get_registered_model(name).aliases  # alias -> version
    result = {
        "tracking_uri": tracking.uri,
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
