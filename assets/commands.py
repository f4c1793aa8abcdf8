"""The `emoflow` commands that drive Dagster and MLflow: run, train, evaluate, sample, classify.

`pipelines.cli` knows nothing of this module (pipelines never imports the Dagster layer): it finds these
commands through the ``emoflow.commands`` entry point that pyproject.toml declares.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
from pathlib import Path

from pipelines.params import emoflow_home, load_params


# ---------------------------------------------------------------------------------------------- set-up
def _dagster_instance(home: Path):
    """A persistent Dagster instance in $EMOFLOW_HOME/dagster, so `dagster dev` later shows these runs."""
    from dagster import DagsterInstance

    dagster_home = Path(os.environ.get("DAGSTER_HOME") or home / "dagster")
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").touch()
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return DagsterInstance.get()


def _resources(args, home: Path, progress: bool = True) -> dict:
    from assets.resources import EmoflowConfig, default_params_path
    from assets.tracking import MlflowTracking

    params_path = str(Path(args.params).resolve()) if getattr(args, "params", None) else default_params_path()
    os.environ["EMOFLOW_PARAMS"] = params_path  # partitions and variants come from the same file
    tracking = load_params(params_path).tracking
    sources = [s for s in (getattr(args, "sources", None) or "").split(",") if s]
    return {
        "emoflow": EmoflowConfig(
            params_path=params_path,
            home=str(home),
            raw_root=str(Path(args.raw_root).resolve()) if getattr(args, "raw_root", None) else "",
            sources=sources,
            max_steps=getattr(args, "max_steps", None) or 0,
            shards=str(Path(args.shards).resolve()) if getattr(args, "shards", None) else "",
            progress_bars=progress,
        ),
        "mlflow_tracking": MlflowTracking(tracking_uri=tracking.uri or "", experiment=tracking.experiment, home=str(home)),
    }


def _variant(args) -> str:
    params = load_params(getattr(args, "params", None))
    variant = args.variant or params.model.variant
    if variant not in params.model.variants:
        raise SystemExit(f"emoflow: unknown variant {variant!r}; params model.variants: {list(params.model.variants)}")
    return variant


def _fail(result, what: str) -> int:
    print(f"emoflow: {what} failed; see the run in the Dagster UI (dagster dev -w workspace.yaml).", file=sys.stderr)
    for event in result.all_events:
        if event.is_failure and event.event_specific_data is not None and getattr(event.event_specific_data, "error", None):
            print(event.event_specific_data.error.to_string(), file=sys.stderr)
    return 1


def _materialize(assets_defs, resources, instance, partition_key=None, selection=None):
    from dagster import materialize

    return materialize(
        assets_defs, resources=resources, instance=instance, partition_key=partition_key, selection=selection, raise_on_error=False
    )


# ---------------------------------------------------------------------------------------------- commands
def cmd_run(args) -> int:
    """prepare → train → evaluate → register and promote, once, through Dagster."""
    home = emoflow_home()
    resources = _resources(args, home)
    data = resources["emoflow"].data()
    sources = resources["emoflow"].enabled_sources()
    missing = [(s, data.source_dir(s)) for s in sources if not data.source_dir(s).is_dir()]
    if missing:
        from pipelines.prepare import MissingDatasetsError

        print(f"emoflow: {MissingDatasetsError(missing)}", file=sys.stderr)
        return 2
    variant = _variant(args)
    instance = _dagster_instance(home)

    from assets.checks import SHARD_CHECKS
    from assets.data_assets import emotionset_shards
    from assets.model_assets import VARIANT_ASSETS

    print(f"[1/2] EmotionSet shards from {data.raw_root_path()} ({', '.join(sources)})", file=sys.stderr)
    prepared = _materialize([emotionset_shards, *SHARD_CHECKS], resources, instance)
    if not prepared.success:
        return _fail(prepared, "preparing the shards")
    shard_meta = prepared.asset_materializations_for_node("emotionset_shards")[0].metadata
    print(f"[2/2] train and evaluate {variant} (emotionset)", file=sys.stderr)
    train_asset, evaluate_asset = VARIANT_ASSETS[variant]
    trained = _materialize([train_asset, evaluate_asset], resources, instance, partition_key="emotionset")
    if not trained.success:
        return _fail(trained, f"training {variant}")
    train_meta = trained.asset_materializations_for_node(f"train_{variant}")[0].metadata
    eval_meta = trained.asset_materializations_for_node(f"evaluate_{variant}")[0].metadata
    run_id = train_meta["mlflow_run_id"].value
    tracking = resources["mlflow_tracking"]
    artifacts = _run_artifacts_dir(tracking, run_id)
    summary = {
        "shard_version": shard_meta["version"].value,
        "shards": str(shard_meta["shard_set_path"].value),
        "rows": shard_meta["rows"].value,
        "variant": variant,
        "mlflow_run_id": run_id,
        "registered_model": train_meta["registered_model"].value,
        "model_version": train_meta["model_version"].value,
        "trained_again": not train_meta["reused"].value,
        "test_bpd": eval_meta["test_bpd"].value,
        "accuracy": eval_meta["test_accuracy"].value if "test_accuracy" in eval_meta else None,
        "champion": eval_meta["promoted"].value,
        "promotion": eval_meta["promotion"].value,
        "sample_grid": str(artifacts / "evaluation" / "samples_t0.7.png") if artifacts else None,
        "confusion_matrix": str(artifacts / "evaluation" / "confusion_matrix.png") if artifacts else None,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"MLflow run id: {run_id}")
    print(f"model version: {summary['registered_model']} v{summary['model_version']}"
          f" ({'champion' if summary['champion'] else 'candidate'}: {summary['promotion']})")
    print(f"EmotionSet {summary['shard_version']}: {summary['rows']} rows in {summary['shards']}")
    print(f"test bits/dim: {summary['test_bpd']:.4f}" + (f", accuracy {summary['accuracy']:.3f}" if summary["accuracy"] is not None else ""))
    if artifacts:
        print(f"sample grid:      {summary['sample_grid']}")
        print(f"confusion matrix: {summary['confusion_matrix']}")
    print("Dagster UI:  DAGSTER_HOME=" + os.environ["DAGSTER_HOME"] + " .venv/bin/dagster dev -w workspace.yaml")
    print(f"MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {tracking.uri()}")
    return 0


def _run_artifacts_dir(tracking, run_id: str) -> Path | None:
    """The local folder of a run's artifacts (None when the artifact store is remote)."""
    uri = tracking.client().get_run(run_id).info.artifact_uri
    return Path(uri[len("file://"):]) if uri.startswith("file://") else None


def cmd_train(args) -> int:
    home = emoflow_home()
    resources = _resources(args, home)
    variant = _variant(args)
    from assets.model_assets import VARIANT_ASSETS

    result = _materialize([VARIANT_ASSETS[variant][0]], resources, _dagster_instance(home), partition_key=args.dataset)
    if not result.success:
        return _fail(result, f"training {variant}")
    meta = result.asset_materializations_for_node(f"train_{variant}")[0].metadata
    summary = {k: v.value for k, v in meta.items() if k != "bits_per_dim_curve"}
    _write_json(args.summary_out, {k: summary[k] for k in ("steps", "train_bpd", "val_bpd", "images_per_s", "skipped_steps", "model_version")})
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _write_json(path: str | None, obj) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def cmd_evaluate(args) -> int:
    home = emoflow_home()
    resources = _resources(args, home)
    variant = _variant(args)
    from assets.model_assets import VARIANT_ASSETS

    train_asset, evaluate_asset = VARIANT_ASSETS[variant]
    # the training asset rides along (not run) so its last output can be loaded as the evaluation's input
    result = _materialize(
        [train_asset, evaluate_asset], resources, _dagster_instance(home), partition_key=args.dataset, selection=[evaluate_asset]
    )
    if not result.success:
        return _fail(result, f"evaluating {variant}")
    meta = {k: v.value for k, v in result.asset_materializations_for_node(f"evaluate_{variant}")[0].metadata.items() if not k.startswith("figure_")}
    _write_json(args.metrics_out, {k: v for k, v in meta.items() if k.startswith("test_") and isinstance(v, float)} | {"promoted": meta["promoted"]})
    if args.plots_dir:
        _write_plots(Path(args.plots_dir), resources["mlflow_tracking"], meta["mlflow_run_id"])
    print(json.dumps(meta, indent=2, default=str))
    return 0


def _write_plots(plots: Path, tracking, run_id: str) -> None:
    """DVC plots: the training bits/dim curve and the test confusion matrix (one row per test image)."""
    import csv

    plots.mkdir(parents=True, exist_ok=True)
    client = tracking.client()
    history = client.get_metric_history(run_id, "train.bpd")
    with open(plots / "bpd_curve.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "bpd"])
        writer.writerows([m.step, m.value] for m in sorted(history, key=lambda m: m.step))
    local = Path(client.download_artifacts(run_id, "evaluation/confusion.json", str(plots)))
    confusion = json.loads(local.read_text())
    local.unlink()
    with open(plots / "confusion.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted"])
        classes = confusion["classes"]
        for i, row in enumerate(confusion["confusion"]):
            for j, count in enumerate(row):
                writer.writerows([classes[i], classes[j]] for _ in range(int(count)))


def load_model(args, home: Path):
    """A model from ``--model`` (an MLflow URI such as models:/emoflow-glow@champion) or ``--checkpoint``."""
    if args.checkpoint:
        from flowmodels.training import model_from_checkpoint

        return model_from_checkpoint(args.checkpoint)
    from assets.tracking import MlflowTracking

    tracking_params = load_params(getattr(args, "params", None)).tracking
    tracking = MlflowTracking(tracking_uri=tracking_params.uri or "", experiment=tracking_params.experiment, home=str(home))
    return tracking.load_model(args.model)


def cmd_sample(args) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from pipelines.labels import EMOTIONS

    model = load_model(args, emoflow_home()).eval()
    torch.manual_seed(args.seed)
    y = None
    if model.num_classes:
        names = EMOTIONS if model.num_classes == len(EMOTIONS) else tuple(str(i) for i in range(model.num_classes))
        if args.emotion not in names:
            raise SystemExit(f"emoflow: --emotion must be one of {list(names)}")
        y = names.index(args.emotion)
    with torch.no_grad():
        images = model.to_uint8(model.sample(args.n, y=y, temperature=args.temperature)).cpu().numpy()
    n, _, h, w = images.shape
    cols = min(n, 8)
    rows = -(-n // cols)
    grid = np.zeros((rows * h, cols * w), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = images[i, 0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(out)
    print(json.dumps({"out": str(out), "n": n, "emotion": args.emotion if y is not None else None, "temperature": args.temperature}))
    return 0


def cmd_classify(args) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from flowmodels import bayes_posterior
    from pipelines.faces import FaceAligner
    from pipelines.labels import EMOTIONS
    from pipelines.records import FaceRecord, RawRecord
    from pipelines.svd import truncate_singular_values

    params = load_params(getattr(args, "params", None))
    model = load_model(args, emoflow_home()).eval()
    if not model.num_classes:
        raise SystemExit("emoflow: classify needs an emotion-conditional model")
    _, h, w = model.image_shape
    aligner = FaceAligner(params.data.faces, (h, w))
    records = []
    for name in args.images:
        data = Path(name).read_bytes()
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        records.append(RawRecord("photo", "photo", None, image, str(name), hashlib.sha256(data).hexdigest()))
    results = []
    for record, out in zip(records, aligner.process(records)):
        if not isinstance(out, FaceRecord):
            results.append({"file": record.raw_path, "face": False, "reason": out.reason, "detail": out.detail})
            continue
        face = out.face
        if model.pixel_column == "pixels_svd":
            face = truncate_singular_values(face, rank=params.data.svd.rank, energy=params.data.svd.energy)
        x = torch.from_numpy(np.ascontiguousarray(face))[None, None]
        with torch.no_grad():
            probabilities = bayes_posterior(model, x)[0].tolist()
        names = EMOTIONS if model.num_classes == len(EMOTIONS) else [str(i) for i in range(model.num_classes)]
        ranked = dict(sorted(zip(names, probabilities), key=lambda kv: -kv[1]))
        results.append(
            {
                "file": record.raw_path,
                "face": True,
                "detector": out.detector,
                "box": list(out.box),
                "emotion": next(iter(ranked)),
                "probabilities": {k: round(v, 6) for k, v in ranked.items()},
            }
        )
    print(json.dumps(results, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------- registration
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the model commands to `emoflow` (called by pipelines.cli through the entry point)."""
    run = subparsers.add_parser("run", help="the whole graph once through Dagster: prepare, train, evaluate, register, promote")
    run.add_argument("--params", default=None)
    run.add_argument("--raw-root", default=None, help="folder holding one folder per source (default: params data.raw_root)")
    run.add_argument("--sources", default=None, help="comma-separated sources (default: those enabled in params)")
    run.add_argument("--variant", default=None, help="model variant (default: params model.variant)")
    run.add_argument("--max-steps", type=int, default=None, help="training budget override (steps)")
    run.add_argument("--json", action="store_true")
    run.set_defaults(func=cmd_run)

    for name, func, what in (("train", cmd_train, "train one variant"), ("evaluate", cmd_evaluate, "evaluate one variant")):
        p = subparsers.add_parser(name, help=f"{what} (a Dagster materialization, tracked in MLflow)")
        p.add_argument("--params", default=None)
        p.add_argument("--variant", default=None)
        p.add_argument("--dataset", default="emotionset", choices=["emotionset", "mnist"])
        p.add_argument("--sources", default=None)
        p.add_argument("--raw-root", default=None)
        p.add_argument("--shards", default=None, help="a shard set or shards root (default: the latest emotionset_shards)")
        if name == "train":
            p.add_argument("--max-steps", type=int, default=None)
            p.add_argument("--summary-out", default=None, help="also write the training figures to this JSON file")
        else:
            p.add_argument("--metrics-out", default=None, help="also write the test metrics to this JSON file (DVC metrics)")
            p.add_argument("--plots-dir", default=None, help="also write bpd_curve.csv and confusion.csv here (DVC plots)")
        p.set_defaults(func=func)

    for name, func, what in (("sample", cmd_sample, "a PNG grid of samples for an emotion"), ("classify", cmd_classify, "emotion probabilities for image files, as JSON")):
        p = subparsers.add_parser(name, help=what)
        source = p.add_mutually_exclusive_group(required=True)
        source.add_argument("--model", help="an MLflow model URI, e.g. models:/emoflow-bplf_3x3_svd@champion")
        source.add_argument("--checkpoint", help="a training checkpoint (last.pt)")
        p.add_argument("--params", default=None)
        if name == "sample":
            p.add_argument("--emotion", default="happiness")
            p.add_argument("--n", type=int, default=16)
            p.add_argument("--temperature", type=float, default=0.7)
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--out", default="samples.png")
        else:
            p.add_argument("images", nargs="+")
        p.set_defaults(func=func)
