"""MLflow as emoflow uses it: runs (with system metrics), datasets as run inputs, models with their code and
signature in the registry, aliases. A plain class: the Dagster resource (``assets.resources``) and the CLI both
hand out one.

Default store: the SQLite database ``$EMOFLOW_HOME/mlflow.db`` with artifacts in ``$EMOFLOW_HOME/mlartifacts``
(no server needed; MLflow refuses a plain file store unless told otherwise).

Models are logged pickled (flows are not torch.export-friendly) together with the source of the packages they
are made of (``code_paths``), so ``mlflow.pytorch.load_model("models:/emoflow-...@champion")`` works in a
process where emoflow is not installed, and with a tensor signature (uint8 images in, the family's output out).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipelines.params import PROJECT_ROOT, TrackingParams
from runs.registry import CANDIDATE

# What a logged model needs at load time beyond the Python that loads it: the pins of this project.
PIP_REQUIREMENTS = ["torch==2.14.1", "numpy==2.4.6", "pydantic==2.14.4", "PyYAML==6.0.4", "pyarrow==25.0.1"]
# The packages a pickled model's classes live in (and what they import): shipped with every model.
MODEL_CODE = ("flowmodels", "recognition", "adversarial", "training", "scoring", "figures", "pipelines")


@lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass(frozen=True)
class Tracking:
    """``uri``: the tracking (and registry) URI; ``experiment``: where runs go; ``home``: emoflow's home;
    ``system_metrics_seconds``: the sampling interval of training runs' system metrics (None: off)."""

    uri: str
    experiment: str
    home: Path
    system_metrics_seconds: float | None

    @classmethod
    def from_settings(cls, tracking: TrackingParams, home: Path, uri: str | None = None) -> Tracking:
        """URI: ``uri`` if given, else params tracking.uri, else MLFLOW_TRACKING_URI, else the SQLite store in
        ``home``."""
        chosen = (
            uri
            or tracking.uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{Path(home).resolve() / 'mlflow.db'}"
        )
        return cls(chosen, tracking.experiment, Path(home).resolve(), tracking.system_metrics_seconds)

    def mlflow(self):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow

        if self.uri.startswith("sqlite:///"):
            Path(self.uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        return mlflow

    def client(self):
        mlflow = self.mlflow()
        return mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def experiment_id(self) -> str:
        mlflow = self.mlflow()
        existing = mlflow.get_experiment_by_name(self.experiment)
        if existing is not None:
            return existing.experiment_id
        artifacts = self.home / "mlartifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        return mlflow.create_experiment(self.experiment, artifact_location=artifacts.as_uri())

    @contextlib.contextmanager
    def start_run(self, run_name: str, tags: dict[str, str], system_metrics: bool = True) -> Iterator[Any]:
        """A new run, made the active one; system metrics (CPU, memory, GPU when present) sampled while it runs."""
        mlflow = self.mlflow()
        tags = {"mlflow.source.git.commit": git_commit(), **tags}
        system_metrics = system_metrics and self.system_metrics_seconds is not None
        if system_metrics:
            mlflow.set_system_metrics_sampling_interval(self.system_metrics_seconds)
        with mlflow.start_run(
            experiment_id=self.experiment_id(), run_name=run_name, tags=tags, log_system_metrics=system_metrics
        ) as run:
            yield run

    def log_dataset(self, name: str, digest: str, source: str, context: str, tags: dict[str, str] | None = None):
        """Record a data split as an input of the active run: ``digest`` is its version (the shard version for
        the EmotionSet), ``source`` where it lives. Returns the MLflow dataset (to link metrics to it)."""
        mlflow = self.mlflow()
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        dataset = MetaDataset(resolve_dataset_source(source), name=name, digest=digest)
        mlflow.log_input(dataset, context=context, tags=tags)
        return dataset

    def log_model(
        self,
        model,
        registered_model: str,
        signature=None,
        tags: dict[str, str] | None = None,
        code: Sequence[str] = MODEL_CODE,
    ):
        """Log ``model`` into the active run, register it as ``registered_model`` and point ``candidate`` at the
        new version. Returns (model version, logged model id)."""
        self.mlflow()  # sets the URIs
        import mlflow.pytorch

        # Module.cpu() moves the caller's model in place: log it from the CPU, then put it back where it was.
        first = next(model.parameters(), None)
        device = first.device if first is not None else None
        try:
            info = mlflow.pytorch.log_model(
                model.cpu(),
                name="model",
                serialization_format="pickle",
                registered_model_name=registered_model,
                pip_requirements=PIP_REQUIREMENTS,
                code_paths=[str(PROJECT_ROOT / package) for package in code],
                signature=signature,
                await_registration_for=60,
            )
        finally:
            if device is not None:
                model.to(device)
        client = self.client()
        version = str(info.registered_model_version)
        for key, value in (tags or {}).items():
            client.set_model_version_tag(registered_model, version, key, value)
        client.set_registered_model_alias(registered_model, CANDIDATE, version)
        return client.get_model_version(registered_model, version), info.model_id

    def version_by_alias(self, registered_model: str, alias: str):
        """The model version holding ``alias``, or None (no such model or alias)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(registered_model, alias)
        except MlflowException:
            return None

    def set_alias(self, registered_model: str, alias: str, version: str) -> None:
        self.client().set_registered_model_alias(registered_model, alias, str(version))

    def load_model(self, uri: str):
        """The model at ``uri`` (``models:/name@alias``, ``runs:/...``), on the CPU."""
        import sys

        self.mlflow()  # sets the URIs
        import mlflow.pytorch

        # MLflow prepends the model's code_paths to sys.path for the unpickling; once the model is loaded its
        # classes are imported, and leaving the copy first on the path would shadow this checkout for later imports.
        path = list(sys.path)
        try:
            return mlflow.pytorch.load_model(uri, map_location="cpu")
        finally:
            sys.path[:] = path

    def run_artifacts_dir(self, run_id: str) -> Path | None:
        """The local folder of a run's artifacts (None when the artifact store is remote)."""
        uri = self.client().get_run(run_id).info.artifact_uri
        return Path(uri[len("file://") :]) if uri.startswith("file://") else None


def image_signature(
    image_shape: Sequence[int], output: str, output_shape: Sequence[int], output_dtype: str = "float32"
):
    """A tensor signature: uint8 images (-1, C, H, W) in, ``output`` of ``output_shape`` (batch axis first) out."""
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, *[int(v) for v in image_shape]), "images")])
    outputs = Schema([TensorSpec(np.dtype(output_dtype), (-1, *[int(v) for v in output_shape]), output)])
    return ModelSignature(inputs=inputs, outputs=outputs)
