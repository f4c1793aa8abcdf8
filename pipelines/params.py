"""``params.yaml`` parsed and typed once: pydantic v2 models, one default per value, errors that name the key.

``load_params(path)`` returns a frozen ``Params``; everything downstream (the Dagster definitions, the CLI,
the DVC stages, the run functions) receives that object or one of its sections, and never reads the file again.
Unknown keys, wrong types and out-of-range values are refused at load with the key's dotted path
(``data.faces.min_score: Input should be a valid number ... (got 'high')``); cross-field rules (image sides
divisible by 2^levels, split ratios summing to 1, ...) are checked on the whole.

The data sections live here; the model half's (flows, training, each model family) in ``pipelines.model_params``;
the scalar types in ``pipelines.params_types``. Everything is re-exported from this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, StrictInt, ValidationError, model_validator

from pipelines.model_params import (  # noqa: F401  (re-exported: one import path for every section)
    ABLATION_VARIANTS,
    AugmentParams,
    BicoganParams,
    BicoganTrainParams,
    EvaluateParams,
    FlowHparams,
    FlowLatentParams,
    JudgeParams,
    LoopParams,
    ModelParams,
    NfganParams,
    ScoreboardParams,
    TrainParams,
)
from pipelines.params_types import (  # noqa: F401  (re-exported)
    DEFAULT_PARAMS_PATH,
    KNOWN_SOURCES,
    PROJECT_ROOT,
    SPLITS,
    Bool,
    Float,
    Fraction,
    Int,
    NonNegativeInt,
    ParamsError,
    PositiveInt,
    Range,
    Section,
    Str,
    project_path,
)


# ---- data ------------------------------------------------------------------------------------------------------
class CkplusParams(Section):
    last_frames: PositiveInt = 3  # the last N frames of a labelled sequence take its emotion
    first_frame_neutral: Bool = True  # ... and its first frame is neutral


class MmiParams(Section):
    middle_frames: PositiveInt = 3  # frames from the middle of each labelled sequence (NFGAN takes three)


class BueegParams(Section):
    stride: PositiveInt = 24  # every stride-th frame inside an expression segment (24 fps videos)


class Fer2013Params(Section):
    layout: Literal["auto", "csv", "images"] = "auto"  # auto: the CSV when the folder has one, else the images


class FaceParams(Section):
    detector: Literal["mtcnn", "haar"] = "mtcnn"
    fallback: Literal["haar", "mtcnn"] | None = "haar"  # used when the main detector finds nothing
    detect_precropped: Bool = False  # FER2013 and CK+48 are crops already: pass through unless true
    margin: Annotated[Float, Field(ge=0, le=1)] = 0.05  # crop margin per side, fraction of the eye-aligned box
    min_score: Annotated[Float, Field(ge=0, le=1)] = 0.9  # MTCNN faces below this probability are ignored
    min_face_fraction: Fraction = 0.12  # smallest face searched for, fraction of the image's shorter side
    batch_size: PositiveInt = 32
    device: Literal["auto", "cpu", "cuda"] = "auto"


class SvdParams(Section):
    rank: PositiveInt | None = 16  # keep the largest `rank` singular values ...
    energy: Fraction | None = None  # ... or the fewest that keep this fraction of the energy

    @model_validator(mode="after")
    def _one_of(self) -> SvdParams:
        if (self.rank is None) == (self.energy is None):
            raise ValueError("set exactly one of rank (int) or energy (fraction in (0, 1])")
        return self


class ShardParams(Section):
    rows_per_file: PositiveInt = 20000
    compression: Literal["zstd", "snappy", "gzip", "lz4", "none"] = "zstd"


class LabelParams(Section):
    # labels a dataset has but the 7-emotion scheme lacks: "quarantine", or an emotion name to map them to
    outside_scheme: dict[Str, Str] = Field(default_factory=lambda: {"contempt": "quarantine"})


class DuplicateParams(Section):
    # candidates: perceptual hashes (63 bits) within this many bits. Measured (README "Data audit"): re-encoded
    # copies (JPEG q30, resizing, blur) land within 4 bits (99th percentile), pairs at 8 bits are mostly
    # different people
    near_distance: Annotated[StrictInt, Field(ge=0, le=30)] = 6
    # verified: worst-cell mean absolute difference of the standardised faces at most this. Measured: FER2013
    # copies at 0.25-0.35 are all the same photo, above 0.6 mostly different people; different JAFFE/CK+ subjects
    # whose hashes collide start at 0.31
    max_cell_error: Annotated[Float, Field(gt=0)] = 0.30
    # a group spanning splits is kept in the first of these it has (test first: a published test stays intact)
    split_priority: tuple[Literal["train", "val", "test"], ...] = ("test", "val", "train")
    label_conflicts: Literal["quarantine", "keep"] = "quarantine"  # copies whose labels disagree
    keep_one_within_split: Bool = True  # other copies of a face in its split -> quarantined as `duplicate`

    @model_validator(mode="after")
    def _priority(self) -> DuplicateParams:
        if sorted(self.split_priority) != sorted(SPLITS):
            raise ValueError(f"split_priority must order exactly {list(SPLITS)}, got {list(self.split_priority)}")
        return self


class DensityOutlierParams(Section):
    # opt-in: quarantine the least likely `fraction` of the faces scored in a density audit's result file
    # (written by the density_audit asset / `emoflow density-audit`) when the next shard version is assembled
    scores_file: Str | None = None
    fraction: Annotated[Float, Field(ge=0, lt=1)] = 0.0


class AuditParams(Section):
    blank_max_std: Annotated[Float, Field(ge=0)] = 2.0  # gray std at most this: a blank image (FER2013 has 12)
    max_image_pixels: PositiveInt = 50_000_000  # header declares more: refused before decoding (a 50 MP photo passes)
    duplicates: DuplicateParams = Field(default_factory=DuplicateParams)
    density_outliers: DensityOutlierParams = Field(default_factory=DensityOutlierParams)


class DataParams(Section):
    raw_root: Str = "data/raw"  # one folder per source below it
    sources: tuple[Literal["jaffe", "ckplus", "fer2013", "mmi", "bueeg"], ...] = ("jaffe", "ckplus", "fer2013")
    source_dirs: dict[Literal["jaffe", "ckplus", "fer2013", "mmi", "bueeg"], Str] = Field(default_factory=dict)
    image_size: tuple[Annotated[StrictInt, Field(ge=8)], Annotated[StrictInt, Field(ge=8)]] = (48, 48)
    seed: Int = 20240601
    splits: dict[Literal["train", "val", "test"], Annotated[Float, Field(ge=0, le=1)]] = Field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1}
    )
    folds: NonNegativeInt = 10  # subject-independent k-fold column (paper 002 uses 10); 0 = none
    labels: LabelParams = Field(default_factory=LabelParams)
    ckplus: CkplusParams = Field(default_factory=CkplusParams)
    mmi: MmiParams = Field(default_factory=MmiParams)
    bueeg: BueegParams = Field(default_factory=BueegParams)
    fer2013: Fer2013Params = Field(default_factory=Fer2013Params)
    faces: FaceParams = Field(default_factory=FaceParams)
    svd: SvdParams = Field(default_factory=SvdParams)
    shards: ShardParams = Field(default_factory=ShardParams)
    audit: AuditParams = Field(default_factory=AuditParams)

    @model_validator(mode="after")
    def _rules(self) -> DataParams:
        h, w = self.image_size
        if h % 4 or w % 4:
            raise ValueError(f"image_size {list(self.image_size)}: both sides must be divisible by 4")
        if set(self.splits) != set(SPLITS):
            raise ValueError(f"splits must give ratios for exactly {list(SPLITS)}, got {sorted(self.splits)}")
        if abs(sum(self.splits.values()) - 1.0) > 1e-6:
            raise ValueError(f"splits ratios must sum to 1, got {sum(self.splits.values()):g}")
        if self.folds == 1:
            raise ValueError("folds must be 0 (no folds) or >= 2, got 1")
        return self

    def raw_root_path(self) -> Path:
        return project_path(self.raw_root)

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
            "labels": self.labels.model_dump(),
            "faces": self.faces.model_dump(exclude={"batch_size", "device"}),
            "svd": self.svd.model_dump(),
            "screening": self.audit.model_dump(include={"blank_max_std", "max_image_pixels"}),
        }
        if source in ("ckplus", "mmi", "bueeg", "fer2013"):
            shaping[source] = getattr(self, source).model_dump()
        return shaping

    def assembly_shaping(self) -> dict[str, Any]:
        """The settings that shape the assembled EmotionSet beyond its sources' rows."""
        shaping: dict[str, Any] = {"seed": self.seed, "splits": dict(self.splits), "folds": self.folds}
        shaping["duplicates"] = self.audit.duplicates.model_dump()
        outliers = self.audit.density_outliers
        if outliers.scores_file and outliers.fraction > 0:
            from pipelines.versioning import file_sha256

            scores = file_sha256(project_path(outliers.scores_file))
            shaping["density_outliers"] = {"scores_sha256": scores, "fraction": outliers.fraction}
        return shaping


class MnistParams(Section):
    root: Str = "data/raw/mnist"  # the four idx(.gz) files; the second source of Table 3

    def root_path(self) -> Path:
        return project_path(self.root)


class TrackingParams(Section):
    uri: Str | None = None  # null: MLFLOW_TRACKING_URI, else sqlite:///$EMOFLOW_HOME/mlflow.db
    experiment: Str = "emoflow"
    # MLflow samples CPU/memory/GPU this often during a training run (MLflow's own default, 10 s, records nothing
    # for a run shorter than that); null: no system metrics
    system_metrics_seconds: Annotated[Float, Field(gt=0)] | None = 5.0


class RetrainParams(Section):
    cron: Annotated[Str, Field(pattern=r"^\S+(\s+\S+){4}$")] = "0 3 * * 1"  # 5-field cron
    variants: tuple[Str, ...] = ()  # retrained besides the champions


class Params(Section):
    """The whole of params.yaml. ``path``: the file it came from (None for defaults)."""

    data: DataParams = Field(default_factory=DataParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    judge: JudgeParams = Field(default_factory=JudgeParams)
    flow_latent_classifier: FlowLatentParams = Field(default_factory=FlowLatentParams)
    scoreboard: ScoreboardParams = Field(default_factory=ScoreboardParams)
    nfgan: NfganParams = Field(default_factory=NfganParams)
    bicogan: BicoganParams = Field(default_factory=BicoganParams)
    mnist: MnistParams = Field(default_factory=MnistParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    retrain: RetrainParams = Field(default_factory=RetrainParams)
    path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _cross_section(self) -> Params:
        side = 2**self.model.hparams.levels
        h, w = self.data.image_size
        if h % side or w % side:
            raise ValueError(
                f"data.image_size {[h, w]}: both sides must be divisible by 2^model.hparams.levels = {side} "
                "(every level of the flows squeezes the image by 2)"
            )
        audited = self.evaluate.density_audit.variant
        if audited not in self.model.variants:
            raise ValueError(
                f"evaluate.density_audit.variant {audited!r} is not one of model.variants {list(self.model.variants)}"
            )
        if 32 % side:  # MNIST is zero-padded to 32x32 for the ablation
            raise ValueError(
                f"model.hparams.levels {self.model.hparams.levels}: MNIST's 32x32 needs 2^levels to divide 32"
            )
        return self

    def with_overrides(self, raw_root: str | None = None, sources: list[str] | None = None) -> Params:
        """The command line's overrides (``--raw-root``, ``--sources``), validated like the file."""
        changes: dict[str, Any] = {}
        if raw_root:
            changes["raw_root"] = str(Path(raw_root).resolve())
        if sources:
            changes["sources"] = tuple(sources)
        if not changes:
            return self
        updated = self.replace(data=self.data.replace(**changes))
        return updated.model_copy(update={"path": self.path})


def _format_error(error: ValidationError, source: str) -> str:
    """One line per problem: the dotted key, pydantic's message and the value found."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        value = problem.get("input")
        shown = "" if problem["type"] in ("missing",) or isinstance(value, dict) else f" (got {value!r})"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {where + ': ' if where else ''}{message}{shown}")
    return "; ".join(lines)


def load_params(path: str | os.PathLike | None = None) -> Params:
    """Read params.yaml (default: the project's) into typed settings; anything invalid raises ParamsError."""
    p = Path(path) if path is not None else DEFAULT_PARAMS_PATH
    if not p.exists():
        raise ParamsError(f"params file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParamsError(f"{p}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{p}: expected a mapping at the top level")
    try:
        params = Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_format_error(error, p.name)) from None
    return params.model_copy(update={"path": p.resolve()})


def emoflow_home() -> Path:
    """Everything emoflow writes lives here: EMOFLOW_HOME, default ``data/`` in the project."""
    home = os.environ.get("EMOFLOW_HOME")
    path = Path(home) if home else PROJECT_ROOT / "data"
    return path.resolve()
