"""MLflow as a thin Dagster resource: runs, metrics, artifacts, the model registry and champion promotion.

Default store: the SQLite database ``$EMOFLOW_HOME/mlflow.db`` with artifacts in ``$EMOFLOW_HOME/mlartifacts``
(MLflow refuses a plain file store unless told otherwise; SQLite needs no server). Registered models are named
``emoflow-<variant>``; every new version gets the alias ``candidate``; evaluation moves ``champion`` to it only
when its test bits/dim beats the current champion's on the same test split.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from dagster import ConfigurableResource

from pipelines.params import emoflow_home

CANDIDATE = "candidate"
CHAMPION = "champion"
# What a logged flow model needs at load time beyond the Python that loads it: the pins of this project.
_PIP_REQUIREMENTS = ["torch==2.14.1", "numpy==2.4.6"]


def registered_name(variant: str) -> str:
    return f"emoflow-{variant}"


@dataclass(frozen=True)
class PromotionDecision:
    variant: str
    version: str
    promoted: bool
    candidate_bpd: float
    champion_version: str | None
    champion_bpd: float | None
    test_split: str
    reason: str

    def as_tags(self) -> dict[str, str]:
        tags = {
            "promotion.decision": "champion" if self.promoted else "candidate",
            "promotion.reason": self.reason,
            "promotion.test_split": self.test_split,
            "promotion.candidate_test_bpd": f"{self.candidate_bpd:.6f}",
        }
        if self.champion_version is not None:  # no champion before: no empty tags
            tags["promotion.champion_version"] = self.champion_version
        if self.champion_bpd is not None:
            tags["promotion.champion_test_bpd"] = f"{self.champion_bpd:.6f}"
        return tags


class MlflowTracking(ConfigurableResource):
    """Tracking URI: this resource's ``tracking_uri``, else MLFLOW_TRACKING_URI, else params ``tracking.uri``,
    else ``sqlite:///$EMOFLOW_HOME/mlflow.db``."""

    tracking_uri: str = ""
    experiment: str = "emoflow"
    home: str = ""

    def home_path(self) -> Path:
        return Path(self.home).resolve() if self.home else emoflow_home()

    def uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        home = self.home_path()
        home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{home / 'mlflow.db'}"

    def _mlflow(self):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow

        mlflow.set_tracking_uri(self.uri())
        mlflow.set_registry_uri(self.uri())
        return mlflow

    def client(self):
        mlflow = self._mlflow()
        return mlflow.MlflowClient(tracking_uri=self.uri(), registry_uri=self.uri())

    def experiment_id(self) -> str:
        mlflow = self._mlflow()
        existing = mlflow.get_experiment_by_name(self.experiment)
        if existing is not None:
            return existing.experiment_id
        artifacts = self.home_path() / "mlartifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        return mlflow.create_experiment(self.experiment, artifact_location=artifacts.as_uri())

    @contextlib.contextmanager
    def start_run(self, run_name: str, tags: dict[str, str]) -> Iterator[Any]:
        mlflow = self._mlflow()
        with mlflow.start_run(experiment_id=self.experiment_id(), run_name=run_name, tags=tags) as run:
            yield run

    def log_flow_model(self, model, variant: str, run_id: str, tags: dict[str, str]):
        """Log the model (pickle serialisation: flows are not torch.export-friendly), register it as
        ``emoflow-<variant>`` and point ``candidate`` at the new version."""
        mlflow = self._mlflow()
        import mlflow.pytorch

        name = registered_name(variant)
        # Module.cpu() moves the caller's model in place: log it from the CPU, then put it back where it was
        # (a model still training on the GPU must not come back on the CPU).
        first_param = next(model.parameters(), None)
        device = first_param.device if first_param is not None else None
        # Inside ``with tracking.start_run(...) as run`` that run is already active: MLflow refuses to start it
        # again ("Run with UUID ... is already active"), so log into it as it is.
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            run_context = contextlib.nullcontext(active)
        else:
            run_context = mlflow.start_run(run_id=run_id, nested=active is not None)
        try:
            with run_context:
                info = mlflow.pytorch.log_model(
                    model.cpu(),
                    name="model",
                    serialization_format="pickle",
                    registered_model_name=name,
                    pip_requirements=_PIP_REQUIREMENTS,
                    await_registration_for=60,
                )
        finally:
            if device is not None:
                model.to(device)
        client = self.client()
        version = str(info.registered_model_version)
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        client.set_registered_model_alias(name, CANDIDATE, version)
        return client.get_model_version(name, version)

    def version_by_alias(self, variant: str, alias: str):
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(registered_name(variant), alias)
        except MlflowException:
            return None

    def load_model(self, uri: str):
        mlflow = self._mlflow()
        import mlflow.pytorch

        return mlflow.pytorch.load_model(uri, map_location="cpu")

    def promote_if_better(
        self, variant: str, version: str, candidate_bpd: float, test_split: str, champion_bpd: float | None = None
    ) -> PromotionDecision:
        """Move ``champion`` to ``version`` when it beats the champion on ``test_split`` (lower bits/dim).

        ``champion_bpd``: the champion's bits/dim on this same test split; evaluation measures it when the
        champion was last scored on another split. The comparison is recorded as tags on the candidate version.
        """
        client = self.client()
        name = registered_name(variant)
        champion = self.version_by_alias(variant, CHAMPION)
        # MLflow 3 reports ModelVersion.version as an int: compare (and record) versions as strings.
        champion_version = str(champion.version) if champion is not None else None
        if champion_version == str(version):
            decision = PromotionDecision(variant, str(version), True, candidate_bpd, champion_version, champion_bpd, test_split, "already champion")
        elif champion is None:
            decision = PromotionDecision(variant, str(version), True, candidate_bpd, None, None, test_split, "no champion yet")
        else:
            if champion_bpd is None:
                raise ValueError("champion_bpd is required when a champion exists")
            better = candidate_bpd < champion_bpd
            decision = PromotionDecision(
                variant,
                str(version),
                better,
                candidate_bpd,
                champion_version,
                champion_bpd,
                test_split,
                f"test bits/dim {candidate_bpd:.4f} {'<' if better else '>='} champion v{champion_version}'s {champion_bpd:.4f}",
            )
        if decision.promoted:
            client.set_registered_model_alias(name, CHAMPION, str(version))
        for key, value in decision.as_tags().items():
            client.set_model_version_tag(name, str(version), key, value)
        return decision
