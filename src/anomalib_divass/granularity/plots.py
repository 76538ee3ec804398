"""Plots of a granularity sweep: reconstruction error and AUROC against the block size.

The x axis holds the uniform block sizes (1 = pixel-wise memory ... one block per map); the
default granularity and the vanilla autoencoder, which are not on that axis, are drawn as
horizontal lines.

Example:
    >>> plot_sweep(rows, "docs/granularity", title="bottle")  # doctest: +SKIP
    [PosixPath('docs/granularity/errors.png'), PosixPath('docs/granularity/auroc.png')]

"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["plot_sweep"]

OFF_AXIS_STYLES = {"default": ":", "vanilla AE": "--"}


def _axis_rows(rows: Sequence[Mapping[str, Any]], variant: str) -> list[Mapping[str, Any]]:
    return [row for row in rows if row["variant"] == variant and row["block_size"] not in {"", None}]


def _off_axis_lines(axes: plt.Axes, rows: Sequence[Mapping[str, Any]], variant: str, column: str, color: str) -> None:
    for row in rows:
        if row["variant"] == variant and row["setting"] in OFF_AXIS_STYLES:
            axes.axhline(
                float(row[column]),
                color=color,
                linestyle=OFF_AXIS_STYLES[str(row["setting"])],
                linewidth=1,
                label=f"{row['setting']} ({column.replace('_', ' ')})",
            )


def _save(figure: plt.Figure, axes: plt.Axes, labels: Sequence[str], ylabel: str, path: Path) -> Path:
    """Label the block-size axis, add the legend, write the PNG and close the figure."""
    axes.set_xticks(range(len(labels)), labels)
    axes.set_xlabel("block side k per scale, in feature cells (capped at the map side)")
    axes.set_ylabel(ylabel)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_sweep(rows: Sequence[Mapping[str, Any]], out_dir: Path | str, title: str = "") -> list[Path]:
    """Draw ``errors.png`` (normal and abnormal error, DAAD) and ``auroc.png`` (image and pixel AUROC).

    Args:
        rows: Sweep rows with real test metrics.
        out_dir: Folder for the PNG files.
        title: Dataset name for the titles.

    Returns:
        The paths of the written plots.

    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    variants = list(dict.fromkeys(str(row["variant"]) for row in rows))
    axis = _axis_rows(rows, variants[0])
    labels = [str(row["setting"]).replace("k=", "") for row in axis]
    positions = list(range(len(axis)))

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for column, color in (("normal_error", "tab:blue"), ("abnormal_error", "tab:red")):
        axes.plot(positions, [float(row[column]) for row in axis], "o-", color=color, label=column.replace("_", " "))
        _off_axis_lines(axes, rows, variants[0], column, color)
    axes.set_yscale("log")
    axes.set_title(f"{title}: reconstruction error of normal and abnormal test images")
    errors_path = _save(figure, axes, labels, "mean squared reconstruction error", out_dir / "errors.png")

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    colors = {"image_AUROC": "tab:green", "pixel_AUROC": "tab:purple"}
    markers = ["o-", "s--", "^-."]
    for index, variant in enumerate(variants):
        axis_rows = _axis_rows(rows, variant)
        for column, color in colors.items():
            axes.plot(
                positions,
                [float(row[column]) for row in axis_rows],
                markers[index % len(markers)],
                color=color,
                label=f"{variant} {column.replace('_', ' ')}",
            )
    for column, color in colors.items():
        _off_axis_lines(axes, rows, variants[0], column, color)
    axes.set_title(f"{title}: detection against block size")
    auroc_path = _save(figure, axes, labels, "AUROC on the real test set", out_dir / "auroc.png")
    return [errors_path, auroc_path]
