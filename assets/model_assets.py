"""Model assets: one training and one evaluation asset per variant of the BPLF ablation, partitioned by the
dataset trained on (the EmotionSet shards, or MNIST for the paper's Table 3), and the ablation table.

Training logs one MLflow run per materialization, registers the model as ``emoflow-<variant>`` (MNIST models as
``emoflow-<variant>-mnist``) with alias ``candidate``; evaluation scores the test split, logs the pictures, and
promotes the candidate to ``champion`` only when it beats the current champion on that same test split.
"""

import base64
import hashlib
import io
import json
import subprocess
import time
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    Output,
    StaticPartitionsDefinition,
    asset,
)

from assets.data_assets import emotionset_shards
from assets.lineage import ShardSetRecord, latest_partition_metadata, latest_shard_set
from assets.resources import EmoflowConfig, default_params_path
from assets.tracking import CHAMPION, MlflowTracking
from pipelines.labels import EMOTIONS
from pipelines.params import PROJECT_ROOT, load_params
from pipelines.versioning import hash_raw_inputs

DATASETS = ("emotionset", "mnist")
DATASET_PARTITIONS = StaticPartitionsDefinition(list(DATASETS))
MNIST_SIDE = 32  # 28x28 zero-padded to 32x32 so three levels of squeezing divide evenly


def tracked_name(variant: str, dataset: str) -> str:
    """The registry entry a (variant, dataset) model goes to, without the ``emoflow-`` prefix."""
    return variant if dataset == "emotionset" else f"{variant}-{dataset}"


def png_markdown(png: bytes, title: str) -> str:
    """Dagster has no image metadata type: a base64 PNG inside markdown shows in the UI."""
    return f"**{title}**\n\n![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flowmodels_code_version() -> str:
    h = hashlib.sha256()
    for path in sorted((PROJECT_ROOT / "flowmodels").rglob("*.py")):
        h.update(path.relative_to(PROJECT_ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


class TrainingData:
    """The train/val/test sets of one dataset partition and the version that identifies them."""

    def __init__(self, dataset: str, version: str, source: str, image_shape: tuple[int, int, int], loader):
        self.dataset = dataset
        self.version = version
        self.source = source  # shard-set folder or MNIST root
        self.image_shape = image_shape
        self._loader = loader

    def split(self, split: str, column: str = "pixels"):
        return self._loader(split, column)

    @property
    def test_split_key(self) -> str:
        return f"{self.dataset}/{self.version}/test"


def resolve_training_data(context: AssetExecutionContext, emoflow: EmoflowConfig, dataset: str) -> TrainingData:
    from flowmodels.data import load_mnist_partition, load_shard_split

    if dataset == "emotionset":
        if emoflow.shards:  # named explicitly (DVC's stages, `emoflow train --shards`)
            from pipelines.prepare import resolve_shard_set

            path = resolve_shard_set(Path(emoflow.shards))
            record = ShardSetRecord(path, json.loads((path / "manifest.json").read_text())["version"], "")
        else:
            record = latest_shard_set(context.instance)
        if record is None:
            raise RuntimeError("no EmotionSet shards materialized yet: materialize emotionset_shards first")
        sources = emoflow.enabled_sources()

        def load(split, column):
            return load_shard_split(record.path, split, column=column, sources=sources)

        height, width = json.loads((record.path / "manifest.json").read_text())["image_size"]
        return TrainingData(dataset, record.version, str(record.path), (1, height, width), load)
    root = emoflow.mnist_root_path()
    version = hash_raw_inputs(root)[:16]

    def load_mnist(split, column):
        return load_mnist_partition(root, split, pad_to=MNIST_SIDE, column=column)

    return TrainingData(dataset, version, str(root), (1, MNIST_SIDE, MNIST_SIDE), load_mnist)


def _model_spec(emoflow: EmoflowConfig, variant: str, dataset: str, image_shape) -> dict:
    params = emoflow.params()
    num_classes = (len(EMOTIONS) if dataset == "emotionset" else 10) if params.model.conditional else None
    return {"variant": variant, "image_shape": list(image_shape), "num_classes": num_classes, **params.model.hparams}


def build_variant_assets(variant: str):
    """The training and evaluation assets of one variant."""
    train_key = AssetKey(f"train_{variant}")

    @asset(
        name=f"train_{variant}",
        partitions_def=DATASET_PARTITIONS,
        deps=[emotionset_shards, AssetKey("mnist_digits")],
        group_name="training",
        kinds={"pytorch", "mlflow"},
        description=f"Train the {variant} flow on the partition's dataset (resuming an interrupted run), log it to "
        f"MLflow and register it with alias 'candidate'. Skipped when nothing that shapes the model changed.",
    )
    def train_asset(context: AssetExecutionContext, emoflow: EmoflowConfig, mlflow_tracking: MlflowTracking) -> Output:
        from flowmodels.training import TrainConfig, build_seeded_model, train

        dataset = context.partition_key
        data = resolve_training_data(context, emoflow, dataset)
        params = emoflow.params()
        config = TrainConfig.from_mapping({**params.train, **emoflow.train_overrides()})
        spec = _model_spec(emoflow, variant, dataset, data.image_shape)
        key_material = {
            "spec": spec,
            "train": config.__dict__,
            "data": data.test_split_key.rsplit("/", 1)[0],
            "code": flowmodels_code_version(),
        }
        key = hashlib.sha256(json.dumps(key_material, sort_keys=True, default=str).encode()).hexdigest()[:16]
        checkpoint_dir = emoflow.home_path() / "checkpoints" / variant / dataset / key
        done = checkpoint_dir / "result.json"
        name = tracked_name(variant, dataset)

        if done.exists():
            previous = json.loads(done.read_text())
            context.log.info(f"{variant}/{dataset}: nothing changed since run {previous['run_id']}: not training again")
            return Output(previous, metadata=_train_metadata(previous, reused=True), data_version=DataVersion(key))

        model = build_seeded_model(config.seed, **{**spec, "image_shape": tuple(spec["image_shape"])})
        column = model.pixel_column
        train_set, val_set = data.split("train", column), data.split("val", column)
        tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.partition": dataset,
            "dagster.asset": f"train_{variant}",
            "emoflow.variant": variant,
            "emoflow.dataset": dataset,
            "emoflow.data_version": data.version,
            "emoflow.shard_version": data.version if dataset == "emotionset" else "",
            "emoflow.train_key": key,
            "mlflow.source.git.commit": git_commit(),
        }
        started = time.monotonic()
        with mlflow_tracking.start_run(run_name=f"train {variant} on {dataset}", tags=tags) as run:
            import mlflow

            mlflow.log_params({f"model.{k}": v for k, v in spec.items()})
            mlflow.log_params({f"train.{k}": v for k, v in config.__dict__.items()})
            mlflow.log_params({"data.source": data.source, "data.column": column, "data.train_images": len(train_set.images)})
            last_log = [0.0]

            def on_progress(event: dict) -> None:
                step = int(event["step"])
                metrics = {k: float(event[k]) for k in ("bpd", "lr", "images_per_s") if event.get(k) is not None}
                if event.get("val_bpd") is not None:
                    metrics["val_bpd"] = float(event["val_bpd"])
                mlflow.log_metrics({f"train.{k}" if k != "val_bpd" else "val.bpd": v for k, v in metrics.items()}, step=step)
                if time.monotonic() - last_log[0] > 5:  # the Dagster log: a line every few seconds, not every step
                    last_log[0] = time.monotonic()
                    context.log.info(
                        f"step {step}: bits/dim {event.get('bpd', float('nan')):.4f}, "
                        f"{event.get('images_per_s', 0):.1f} images/s"
                    )

            result = train(
                model, train_set, val_set, config, checkpoint_dir, on_progress=on_progress, progress_bar=emoflow.progress_bars
            )
            summary = result.as_dict()
            mlflow.log_metrics(
                {
                    "train.final_bpd": summary["train_bpd"],
                    "train.skipped_steps": summary["skipped_steps"],
                    "train.seconds": summary["seconds"],
                    "train.images_per_s": summary["images_per_s"],
                    **({"val.final_bpd": summary["val_bpd"]} if summary.get("val_bpd") is not None else {}),
                }
            )
            mlflow.log_dict(summary, "training/result.json")
            version = mlflow_tracking.log_flow_model(
                model, name, run.info.run_id, tags={"emoflow.train_key": key, "emoflow.dataset": dataset, "emoflow.data_version": data.version}
            )
        out = {
            "variant": variant,
            "dataset": dataset,
            "registered_model": f"emoflow-{name}",
            "model_version": str(version.version),
            "run_id": run.info.run_id,
            "train_key": key,
            "data_version": data.version,
            "data_source": data.source,
            "checkpoint": str(checkpoint_dir / "last.pt"),
            "pixel_column": column,
            "result": summary,
            "wall_seconds": round(time.monotonic() - started, 1),
        }
        done.write_text(json.dumps(out, indent=2, default=str))
        return Output(out, metadata=_train_metadata(out, reused=False), data_version=DataVersion(key))

    @asset(
        name=f"evaluate_{variant}",
        partitions_def=DATASET_PARTITIONS,
        ins={"trained": AssetIn(train_key)},
        group_name="evaluation",
        kinds={"pytorch", "mlflow"},
        description=f"Score the {variant} candidate on the test split (bits/dim both conventions, samples per "
        "emotion, confusion matrix, t-SNE, expression transfer, bits/dim curve) and promote it to 'champion' when it "
        "beats the current champion on the same test split.",
    )
    def evaluate_asset(
        context: AssetExecutionContext, emoflow: EmoflowConfig, mlflow_tracking: MlflowTracking, trained: dict
    ) -> MaterializeResult:
        from flowmodels.evaluation import evaluate, test_bits_per_dim
        from flowmodels.training import model_from_checkpoint

        dataset = context.partition_key
        params = emoflow.params()
        data = resolve_training_data(context, emoflow, dataset)
        if data.version != trained["data_version"]:
            raise RuntimeError(
                f"the candidate was trained on {dataset} {trained['data_version']} but the current data is {data.version}: "
                f"materialize train_{variant} first"
            )
        model = model_from_checkpoint(trained["checkpoint"])
        test_set = data.split("test", trained["pixel_column"])
        report = evaluate(
            model,
            test_set,
            temperatures=tuple(params.evaluate.temperatures),
            samples_per_class=params.evaluate.samples_per_class,
            history=trained["result"],  # train and validation curves
            seed=params.evaluate.seed,
            batch_size=params.evaluate.batch_size,
            tsne_points=params.evaluate.tsne_points,
        )
        name = tracked_name(variant, dataset)
        split_key = data.test_split_key
        client = mlflow_tracking.client()
        run_id = trained["run_id"]
        for metric, value in report.metrics.items():
            client.log_metric(run_id, f"test.{metric}", float(value))
        for figure, png in report.figures.items():
            client.log_image(run_id, _png_image(png), artifact_file=f"evaluation/{figure}.png")
        client.log_dict(run_id, {"metrics": report.metrics, "test_split": split_key}, "evaluation/metrics.json")
        if report.confusion is not None:
            client.log_dict(run_id, {"classes": list(test_set.class_names or []), "confusion": report.confusion.tolist()}, "evaluation/confusion.json")

        version = trained["model_version"]
        registered = f"emoflow-{name}"
        client.set_model_version_tag(registered, version, "eval.test_split", split_key)
        client.set_model_version_tag(registered, version, "eval.test_bpd", f"{report.metrics['test_bpd']:.6f}")
        champion = mlflow_tracking.version_by_alias(name, CHAMPION)
        champion_bpd = None
        if champion is not None and str(champion.version) != str(version):  # MLflow gives versions as int
            if champion.tags.get("eval.test_split") == split_key and champion.tags.get("eval.test_bpd"):
                champion_bpd = float(champion.tags["eval.test_bpd"])
            else:  # scored on another split: score it on this one, so the comparison is like for like
                champion_model = mlflow_tracking.load_model(f"models:/{registered}@{CHAMPION}")
                champion_bpd, _ = test_bits_per_dim(champion_model, test_set, params.evaluate.batch_size, params.evaluate.seed)
        decision = mlflow_tracking.promote_if_better(name, version, report.metrics["test_bpd"], split_key, champion_bpd)
        client.log_dict(run_id, decision.__dict__, "evaluation/promotion.json")
        context.log.info(f"{registered} v{version}: {'champion' if decision.promoted else 'stays candidate'} ({decision.reason})")

        metadata = {
            **{f"test_{k}" if not k.startswith("test_") else k: float(v) for k, v in report.metrics.items()},
            "registered_model": registered,
            "model_version": version,
            "mlflow_run_id": run_id,
            "test_split": split_key,
            "promoted": decision.promoted,
            "promotion": decision.reason,
            "champion_version_before": decision.champion_version or "",
        }
        for figure, png in report.figures.items():
            metadata[f"figure_{figure}"] = MetadataValue.md(png_markdown(png, figure.replace("_", " ")))
        return MaterializeResult(metadata=metadata)

    return train_asset, evaluate_asset


def _png_image(png: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(png))


def _train_metadata(out: dict, reused: bool) -> dict:
    result = out["result"]
    curve = "| step | bits/dim |\n|---:|---:|\n" + "\n".join(
        f"| {h['step']} | {h['bpd']:.4f} |" for h in result["history"][:: max(1, len(result["history"]) // 20)]
    )
    return {
        "reused": reused,
        "registered_model": out["registered_model"],
        "model_version": out["model_version"],
        "mlflow_run_id": out["run_id"],
        "train_key": out["train_key"],
        "data_version": out["data_version"],
        "steps": result["steps"],
        "train_bpd": float(result["train_bpd"]),
        "val_bpd": float(result["val_bpd"]) if result.get("val_bpd") is not None else float("nan"),
        "images_per_s": float(result["images_per_s"]),
        "skipped_steps": result["skipped_steps"],
        "stopped_by": result["stopped_by"],
        # -1: started from scratch (Dagster metadata has no null); else the checkpoint step it resumed from
        "resumed_from_step": -1 if result.get("resumed_from_step") is None else int(result["resumed_from_step"]),
        "device": result["device"],
        "bits_per_dim_curve": MetadataValue.md(curve),
        "checkpoint": MetadataValue.path(out["checkpoint"]),
    }


@asset(
    group_name="data",
    kinds={"python"},
    description="MNIST's four idx files (the second source of the BPLF paper's Table 3), checked and versioned by content.",
)
def mnist_digits(context: AssetExecutionContext, emoflow: EmoflowConfig) -> MaterializeResult:
    from pipelines.readers.mnist import load_mnist

    root = emoflow.mnist_root_path()
    counts = {split: int(load_mnist(root, split)[1].shape[0]) for split in ("train", "test")}
    version = hash_raw_inputs(root)[:16]
    return MaterializeResult(
        metadata={"version": version, "root": MetadataValue.path(str(root)), **{f"{k}_images": v for k, v in counts.items()}},
        data_version=DataVersion(version),
    )


VARIANTS = tuple(load_params(default_params_path()).model.variants)
VARIANT_ASSETS = {variant: build_variant_assets(variant) for variant in VARIANTS}
TRAIN_ASSETS = [pair[0] for pair in VARIANT_ASSETS.values()]
EVALUATE_ASSETS = [pair[1] for pair in VARIANT_ASSETS.values()]


@asset(
    deps=EVALUATE_ASSETS,
    group_name="evaluation",
    kinds={"mlflow"},
    description="The BPLF paper's Table 3 regenerated: rows the variants, columns the datasets, cells test bits/dim.",
)
def ablation_table(context: AssetExecutionContext, emoflow: EmoflowConfig, mlflow_tracking: MlflowTracking) -> MaterializeResult:
    rows = []
    for variant in VARIANTS:
        row = {"variant": variant}
        for dataset in DATASETS:
            meta = latest_partition_metadata(context.instance, AssetKey(f"evaluate_{variant}"), dataset)
            row[dataset] = None if meta is None else float(meta["test_bpd"])
        rows.append(row)
    header = "| method | " + " | ".join(f"{d} (bits/dim)" for d in DATASETS) + " |"
    lines = [header, "|---|" + "---:|" * len(DATASETS)]
    for row in rows:
        lines.append(f"| {row['variant']} | " + " | ".join("—" if row[d] is None else f"{row[d]:.3f}" for d in DATASETS) + " |")
    markdown = "\n".join(lines)
    csv = "variant," + ",".join(DATASETS) + "\n" + "\n".join(
        row["variant"] + "," + ",".join("" if row[d] is None else f"{row[d]:.6f}" for d in DATASETS) for row in rows
    ) + "\n"
    out_dir = emoflow.home_path() / "ablation"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table3.csv").write_text(csv)
    with mlflow_tracking.start_run(run_name="ablation table 3", tags={"dagster.run_id": context.run.run_id, "emoflow.kind": "ablation"}):
        import mlflow

        mlflow.log_text(csv, "ablation/table3.csv")
        mlflow.log_text(markdown, "ablation/table3.md")
        mlflow.log_metrics(
            {f"table3.{row['variant']}.{d}": row[d] for row in rows for d in DATASETS if row[d] is not None}
        )
    return MaterializeResult(
        metadata={"table": MetadataValue.md(markdown), "csv": MetadataValue.path(str(out_dir / "table3.csv")), "cells_filled": sum(row[d] is not None for row in rows for d in DATASETS)}
    )
