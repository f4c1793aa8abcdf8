"""`emoflow run`: the whole graph once, through Dagster (prepare -> train -> evaluate -> register, promote).

`pipelines.cli` knows nothing of this module (pipelines never imports the Dagster layer): it finds the command
through the ``emoflow.commands`` entry point that pyproject.toml declares. The other model commands
(train, evaluate, sample, classify) call the run functions directly: ``runs.commands``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from pipelines.params import emoflow_home, load_params


def _fail(result, what: str) -> int:
    print(f"emoflow: {what} failed; see the run in the Dagster UI (dagster dev -w workspace.yaml).", file=sys.stderr)
    for event in result.all_events:
        if (
            event.is_failure
            and event.event_specific_data is not None
            and getattr(event.event_specific_data, "error", None)
        ):
            print(event.event_specific_data.error.to_string(), file=sys.stderr)
    return 1


def _artifact(artifacts, relative: str) -> str | None:
    return str(artifacts / relative) if artifacts and (artifacts / relative).exists() else None


def cmd_run(args) -> int:
    from assets.definitions import build_definitions
    from assets.runner import dagster_instance, materialize_keys, train_run_config
    from pipelines.prepare import MissingDatasetsError
    from runs.families import family_of

    home = emoflow_home()
    sources = [s for s in (args.sources or "").split(",") if s]
    settings = load_params(args.params).with_overrides(raw_root=args.raw_root, sources=sources or None)
    data = settings.data
    missing = [(s, data.source_dir(s)) for s in data.sources if not data.source_dir(s).is_dir()]
    if missing:
        print(f"emoflow: {MissingDatasetsError(missing)}", file=sys.stderr)
        return 2
    variant = args.variant or settings.model.variant
    family = family_of(variant, settings)  # an unknown variant fails here, before any work
    instance = dagster_instance(home)
    defs = build_definitions(settings, home=home, progress_bars=True)

    print(f"[1/2] EmotionSet shards from {data.raw_root_path()} ({', '.join(data.sources)})", file=sys.stderr)
    prepared = materialize_keys(defs, ["emotionset_shards"], instance)
    if not prepared.success:
        return _fail(prepared, "preparing the shards")
    shard_meta = prepared.asset_materializations_for_node("emotionset_shards")[0].metadata
    print(f"[2/2] train and evaluate {variant} (emotionset)", file=sys.stderr)
    # a family refereed by the judge trains it first (reused when nothing changed)
    referee = ["train_judge", "evaluate_judge"] if family.needs_judge else []
    trained = materialize_keys(
        defs,
        ["training_data", *referee, f"train_{variant}", f"evaluate_{variant}"],
        instance,
        "emotionset",
        train_run_config(variant, args.max_steps, *(["judge"] if family.needs_judge else [])),
    )
    if not trained.success:
        return _fail(trained, f"training {variant}")
    train_meta = trained.asset_materializations_for_node(f"train_{variant}")[0].metadata
    eval_meta = trained.asset_materializations_for_node(f"evaluate_{variant}")[0].metadata
    run_id = train_meta["mlflow_run_id"].value
    tracking = defs.resources["mlflow_tracking"].tracking()
    artifacts = tracking.run_artifacts_dir(run_id)
    value = lambda meta, key: meta[key].value if key in meta else None  # noqa: E731
    summary = {
        "shard_version": shard_meta["version"].value,
        "shards": str(shard_meta["shard_set_path"].value),
        "rows": shard_meta["rows"].value,
        "variant": variant,
        "mlflow_run_id": run_id,
        "registered_model": train_meta["registered_model"].value,
        "model_version": train_meta["model_version"].value,
        "trained_again": not train_meta["reused"].value,
        "test_bpd": value(eval_meta, "test_bpd"),
        "accuracy": value(eval_meta, "test_accuracy"),
        "champion": eval_meta["promoted"].value,
        "promotion": eval_meta["promotion"].value,
        # a family's pictures where it draws them (the judge draws no samples)
        "sample_grid": _artifact(artifacts, "evaluation/samples_t0.7.png"),
        "confusion_matrix": _artifact(artifacts, "evaluation/confusion_matrix.png"),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"MLflow run id: {run_id}")
    print(
        f"model version: {summary['registered_model']} v{summary['model_version']}"
        f" ({'champion' if summary['champion'] else 'candidate'}: {summary['promotion']})"
    )
    print(f"EmotionSet {summary['shard_version']}: {summary['rows']} rows in {summary['shards']}")
    scores = [
        f"test bits/dim {summary['test_bpd']:.4f}" if summary["test_bpd"] is not None else None,
        f"accuracy {summary['accuracy']:.3f}" if summary["accuracy"] is not None else None,
    ]
    print(", ".join(s for s in scores if s))
    for label, key in (("sample grid:     ", "sample_grid"), ("confusion matrix:", "confusion_matrix")):
        if summary[key]:
            print(f"{label} {summary[key]}")
    print("Dagster UI:  DAGSTER_HOME=" + os.environ["DAGSTER_HOME"] + " .venv/bin/dagster dev -w workspace.yaml")
    print(f"MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {tracking.uri}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `emoflow run` (called by pipelines.cli through the entry point)."""
    run = subparsers.add_parser(
        "run", help="the whole graph once through Dagster: prepare, train, evaluate, register, promote"
    )
    run.add_argument("--params", default=None)
    run.add_argument(
        "--raw-root", default=None, help="folder holding one folder per source (default: params data.raw_root)"
    )
    run.add_argument("--sources", default=None, help="comma-separated sources (default: those enabled in params)")
    run.add_argument("--variant", default=None, help="model variant (default: params model.variant)")
    run.add_argument("--max-steps", type=int, default=None, help="training budget override (steps)")
    run.add_argument("--json", action="store_true")
    run.set_defaults(func=cmd_run)
