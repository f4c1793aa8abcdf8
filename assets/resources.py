"""Dagster resources: where emoflow writes and how runs report (``EmoflowRuntime``), and MLflow
(``MlflowTracking``). The settings themselves are not a resource: ``assets.definitions.build_definitions``
receives the loaded params and closes every asset over them."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from pipelines.params import TrackingParams, emoflow_home
from runs.tracking import Tracking


class EmoflowRuntime(ConfigurableResource):
    """``home``: emoflow's home (empty: EMOFLOW_HOME, default data/); ``progress_bars``: tqdm bars on the
    terminal (the CLI turns them on; the Dagster event log gets progress lines either way)."""

    home: str = ""
    progress_bars: bool = False

    def home_path(self) -> Path:
        return Path(self.home).resolve() if self.home else emoflow_home()


class MlflowTracking(ConfigurableResource):
    """Tracking URI: ``tracking_uri``, else MLFLOW_TRACKING_URI, else the SQLite store in ``home``
    (``runs.tracking.Tracking.from_settings``). ``experiment`` and ``system_metrics_seconds`` come from the
    settings' ``tracking`` section (``MlflowTracking.from_settings``): no defaults of their own here."""

    tracking_uri: str = ""
    experiment: str
    system_metrics_seconds: float | None
    home: str = ""

    @classmethod
    def from_settings(
        cls, tracking: TrackingParams, home: Path | None = None, uri: str | None = None
    ) -> MlflowTracking:
        return cls(
            tracking_uri=uri or tracking.uri or "",
            experiment=tracking.experiment,
            system_metrics_seconds=tracking.system_metrics_seconds,
            home=str(home or ""),
        )

    def tracking(self) -> Tracking:
        home = Path(self.home).resolve() if self.home else emoflow_home()
        settings = TrackingParams(
            uri=self.tracking_uri or None,
            experiment=self.experiment,
            system_metrics_seconds=self.system_metrics_seconds,
        )
        return Tracking.from_settings(settings, home)
