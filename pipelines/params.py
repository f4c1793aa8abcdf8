"""Loading ``params.yaml`` into typed, validated settings, and where emoflow's home is."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS_PATH = PROJECT_ROOT / "params.yaml"
KNOWN_SOURCES = ("jaffe", "ckplus", "fer2013", "mmi", "bueeg")
SPLITS = ("train", "val", "test")


class ParamsError(ValueError):
    """params.yaml is missing a value or holds one that cannot work."""


@dataclass(frozen=True)
class CkplusParams:
    last_frames: int = 3
    first_frame_neutral: bool = True


@dataclass(frozen=True)
class MmiParams:
    middle_frames: int = 3


@dataclass(frozen=True)
class BueegParams:
    stride: int = 24


@dataclass(frozen=True)
class Fer2013Params:
    layout: str = "auto"  # auto (the CSV when the folder has one, else the image layout) | csv | images


@dataclass(frozen=True)
class FaceParams:
    detector: str = "mtcnn"
    fallback: str | None = "haar"
    detect_precropped: bool = False
    margin: float = 0.05
    min_score: float = 0.9
    min_face_fraction: float = 0.12
    batch_size: int = 32
    device: str = "auto"


@dataclass(frozen=True)
class SvdParams:
    rank: int | None = 16
    energy: float | None = None


@dataclass(frozen=True)
class ShardParams:
    rows_per_file: int = 20000
    compression: str = "zstd"


@dataclass(frozen=True)
class LabelParams:
    outside_scheme: dict[str, str] = field(default_factory=lambda: {"contempt": "quarantine"})


@dataclass(frozen=True)
class DataParams:
    raw_root: str = "data/raw"
    sources: tuple[str, ...] = ("jaffe", "ckplus", "fer2013")
    source_dirs: dict[str, str] = field(default_factory=dict)  # source -> folder under raw_root (or absolute)
    image_size: tuple[int, int] = (48, 48)
    seed: int = 20240601
    splits: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    folds: int = 10
    labels: LabelParams = field(default_factory=LabelParams)
    ckplus: CkplusParams = field(default_factory=CkplusParams)
    mmi: MmiParams = field(default_factory=MmiParams)
    bueeg: BueegParams = field(default_factory=BueegParams)
    fer2013: Fer2013Params = field(default_factory=Fer2013Params)
    faces: FaceParams = field(default_factory=FaceParams)
    svd: SvdParams = field(default_factory=SvdParams)
    shards: ShardParams = field(default_factory=ShardParams)

    def raw_root_path(self) -> Path:
        root = Path(self.raw_root)
        return root if root.is_absolute() else PROJECT_ROOT / root

    def source_dir(self, source: str) -> Path:
        """The folder a source is read from: raw_root/<source>, unless data.source_dirs names another."""
        folder = Path(self.source_dirs.get(source, source))
        return folder if folder.is_absolute() else self.raw_root_path() / folder

    def source_shaping(self, source: str) -> dict[str, Any]:
        """The settings that shape one source's rows (hashed into its version).

        Split ratios, seed and folds are deliberately absent: they are applied when the EmotionSet is
        assembled, so changing them re-assembles shards without re-detecting faces.
        """
        shaping: dict[str, Any] = {
            "image_size": list(self.image_size),
            "labels": asdict(self.labels),
            "faces": {k: v for k, v in asdict(self.faces).items() if k not in ("batch_size", "device")},
            "svd": asdict(self.svd),
        }
        if source in ("ckplus", "mmi", "bueeg", "fer2013"):
            shaping[source] = asdict(getattr(self, source))
        return shaping

    def assembly_shaping(self) -> dict[str, Any]:
        """The settings that shape the assembled EmotionSet beyond its sources' rows."""
        return {"seed": self.seed, "splits": dict(self.splits), "folds": self.folds}


ABLATION_VARIANTS = ("glow", "glow_svd", "bplf_3x3", "bplf_3x3_1x1", "bplf_3x3_svd", "bplf_3x3_1x1_svd")


@dataclass(frozen=True)
class ModelParams:
    """Which flows to build (flowmodels.build_model) and with what hyper-parameters."""

    variant: str = "bplf_3x3_svd"
    variants: tuple[str, ...] = ABLATION_VARIANTS
    conditional: bool = True
    hparams: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluateParams:
    temperatures: tuple[float, ...] = (0.5, 0.7, 1.0)
    samples_per_class: int = 8
    tsne_points: int = 1000
    batch_size: int = 128
    seed: int = 0


@dataclass(frozen=True)
class MnistParams:
    root: str = "data/raw/mnist"

    def root_path(self) -> Path:
        root = Path(self.root)
        return root if root.is_absolute() else PROJECT_ROOT / root


@dataclass(frozen=True)
class TrackingParams:
    uri: str | None = None
    experiment: str = "emoflow"


@dataclass(frozen=True)
class RetrainParams:
    cron: str = "0 3 * * 1"
    variants: tuple[str, ...] = ()


@dataclass(frozen=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: dict[str, Any] = field(default_factory=dict)  # flowmodels.training.TrainConfig.from_mapping checks it
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    mnist: MnistParams = field(default_factory=MnistParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)
    retrain: RetrainParams = field(default_factory=RetrainParams)
    raw: dict[str, Any] = field(default_factory=dict)  # the whole YAML
    path: Path | None = None


def _build(cls, values: dict[str, Any] | None, where: str):
    """Build a frozen dataclass from a YAML mapping, refusing unknown keys (a typo must not pass silently)."""
    values = dict(values or {})
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    kwargs = {}
    for name, f in known.items():
        if name not in values:
            continue
        value = values[name]
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if is_dataclass(default):
            value = _build(type(default), value, f"{where}.{name}")
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _validate(data: DataParams) -> None:
    unknown = [s for s in data.sources if s not in KNOWN_SOURCES]
    if unknown:
        raise ParamsError(f"data.sources: unknown source(s) {unknown}; known: {list(KNOWN_SOURCES)}")
    h, w = data.image_size
    if h < 8 or w < 8 or h % 4 or w % 4:
        raise ParamsError(f"data.image_size {list(data.image_size)}: both sides must be >= 8 and divisible by 4")
    if set(data.splits) != set(SPLITS) or any(v < 0 for v in data.splits.values()):
        raise ParamsError(f"data.splits must give non-negative ratios for exactly {list(SPLITS)}, got {data.splits}")
    if abs(sum(data.splits.values()) - 1.0) > 1e-6:
        raise ParamsError(f"data.splits ratios must sum to 1, got {sum(data.splits.values())}")
    if data.folds < 0 or data.folds == 1:
        raise ParamsError(f"data.folds must be 0 (no folds) or >= 2, got {data.folds}")
    if (data.svd.rank is None) == (data.svd.energy is None):
        raise ParamsError("data.svd: set exactly one of rank (int) or energy (fraction in (0, 1])")
    if data.svd.energy is not None and not 0 < data.svd.energy <= 1:
        raise ParamsError(f"data.svd.energy must be in (0, 1], got {data.svd.energy}")
    if data.svd.rank is not None and data.svd.rank < 1:
        raise ParamsError(f"data.svd.rank must be >= 1, got {data.svd.rank}")
    if not 0 < data.faces.min_face_fraction <= 1:
        raise ParamsError(f"data.faces.min_face_fraction must be in (0, 1], got {data.faces.min_face_fraction}")
    if data.fer2013.layout not in ("auto", "csv", "images"):
        raise ParamsError(f"data.fer2013.layout must be auto, csv or images, got {data.fer2013.layout!r}")
    bad_dirs = sorted(set(data.source_dirs) - set(KNOWN_SOURCES))
    if bad_dirs:
        raise ParamsError(f"data.source_dirs: unknown source(s) {bad_dirs}; known: {list(KNOWN_SOURCES)}")
    if data.faces.detector not in ("mtcnn", "haar"):
        raise ParamsError(f"data.faces.detector must be mtcnn or haar, got {data.faces.detector!r}")
    if data.faces.fallback not in (None, "haar", "mtcnn"):
        raise ParamsError(f"data.faces.fallback must be haar, mtcnn or null, got {data.faces.fallback!r}")
    if data.ckplus.last_frames < 1 or data.mmi.middle_frames < 1 or data.bueeg.stride < 1:
        raise ParamsError("data.ckplus.last_frames, data.mmi.middle_frames and data.bueeg.stride must be >= 1")


def load_params(path: str | os.PathLike | None = None) -> Params:
    """Read params.yaml (default: the project's) into typed settings; unknown or invalid values raise ParamsError."""
    p = Path(path) if path is not None else DEFAULT_PARAMS_PATH
    if not p.exists():
        raise ParamsError(f"params file not found: {p}")
    raw = yaml.safe_load(p.read_text()) or {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{p}: expected a mapping at the top level")
    unknown = sorted(set(raw) - {"data", "model", "train", "evaluate", "mnist", "tracking", "retrain"})
    if unknown:
        raise ParamsError(f"{p}: unknown top-level section(s) {unknown}")
    data = _build(DataParams, raw.get("data"), "data")
    _validate(data)
    model = _build(ModelParams, raw.get("model"), "model")
    if model.variant not in model.variants:
        raise ParamsError(f"model.variant {model.variant!r} must be one of model.variants {list(model.variants)}")
    retrain = _build(RetrainParams, raw.get("retrain"), "retrain")
    if len(retrain.cron.split()) != 5:
        raise ParamsError(f"retrain.cron must be a 5-field cron expression, got {retrain.cron!r}")
    return Params(
        data=data,
        model=model,
        train=dict(raw.get("train") or {}),
        evaluate=_build(EvaluateParams, raw.get("evaluate"), "evaluate"),
        mnist=_build(MnistParams, raw.get("mnist"), "mnist"),
        tracking=_build(TrackingParams, raw.get("tracking"), "tracking"),
        retrain=retrain,
        raw=raw,
        path=p.resolve(),
    )


def emoflow_home() -> Path:
    """Everything emoflow writes lives here: EMOFLOW_HOME, default ``data/`` in the project."""
    home = os.environ.get("EMOFLOW_HOME")
    path = Path(home) if home else PROJECT_ROOT / "data"
    return path.resolve()
