"""PNG figures as Dagster metadata."""

import base64

from dagster import MetadataValue


def png_metadata(png: bytes, title: str) -> MetadataValue:
    """Dagster has no image metadata type: a base64 PNG inside markdown shows in the UI."""
    return MetadataValue.md(f"**{title}**\n\n![{title}](data:image/png;base64,{base64.b64encode(png).decode()})")
