"""The building blocks of the typed settings (``pipelines.params``): strict scalar types, ``Section`` (unknown
keys refused, frozen), and the project's fixed names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS_PATH = PROJECT_ROOT / "params.yaml"
KNOWN_SOURCES = ("jaffe", "ckplus", "fer2013", "mmi", "bueeg")
SPLITS = ("train", "val", "test")


def project_path(path: str) -> Path:
    """A path from params: absolute as is, relative to the project otherwise."""
    p = Path(path)
    return p if p.is_absolute() else PROJECT_ROOT / p


class ParamsError(ValueError):
    """params.yaml is missing a value or holds one that cannot work."""


def _number(value: Any) -> Any:
    """Floats: numbers, and numeric strings (YAML 1.1 reads ``1e-3`` as a string); never booleans."""
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


Int = StrictInt  # refuses booleans, strings and fractions
Float = Annotated[float, BeforeValidator(_number)]
Bool = StrictBool
Str = StrictStr
PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
Fraction = Annotated[Float, Field(gt=0, le=1)]


class Section(BaseModel):
    """A params section: unknown keys refused, frozen, validated on assignment-free copies (``replace``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def replace(self, **changes: Any):
        """A copy with ``changes`` applied and validated again (pydantic's model_copy does not validate)."""
        return type(self).model_validate({**self.model_dump(), **changes})


Range = tuple[Float, Float]
