"""Saving report figures: one place for the file options every figure shares."""

from __future__ import annotations

from pathlib import Path

from ..errors import DagcError


def save(figure, *paths: str | Path) -> list[Path]:
    """Save a matplotlib `figure` to each path, the format from its suffix (.png, .svg, .pdf).

    SVGs carry no date, so a report regenerated from the same data is the same file; a path
    that cannot be written is a one-line `DagcError`.
    """
    written = []
    for path in map(Path, paths):
        try:
            figure.savefig(path, dpi=150, bbox_inches="tight", pad_inches=0.15,
                           metadata={"Date": None} if path.suffix == ".svg" else None)
        except OSError as err:
            raise DagcError(f"{path}: cannot write the figure: {err.strerror or err}") from None
        written.append(path)
    return written
