"""Pictures every family's evaluation draws, as PNG bytes (matplotlib's Figure and Agg canvas only: no pyplot,
no global backend state, safe inside a Dagster process)."""

from figures.canvas import figure, grid_png, png, strip_png, tile
from figures.charts import confusion_png, curve_png, distributions_png, matrix_png, scatter_png

__all__ = [
    "confusion_png",
    "curve_png",
    "distributions_png",
    "figure",
    "grid_png",
    "matrix_png",
    "png",
    "scatter_png",
    "strip_png",
    "tile",
]
