"""The leaderboard's charts (matplotlib, written as PNG).

- ``metrics.png``: one panel per metric, bars grouped by category (and the mean), one bar per model.
- ``cost.png``: training time, inference images/s and model size per model and category (log scale).
- ``roc_<category>.png``: the image-level ROC curve of every model on that category, from the
  curve anomalib's AUROC integrated.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .runner import METRICS, PairResult, write_atomic

__all__ = ["plot_metrics", "plot_roc_curves"]

TITLES = {"image_AUROC": "image AUROC", "pixel_AUROC": "pixel AUROC", "image_F1Score": "image F1"}
TITLES |= {"pixel_F1Score": "pixel F1", "pixel_AUPRO": "PRO (AUPRO, FPR 0.3)"}


def _save(figure: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    write_atomic(path, buffer.getvalue())
    return path


def _label(result: PairResult) -> str:
    untrained = str(result.settings.get("backbone_weights", "")).startswith("untrained")
    return f"{result.model} (untrained backbone)" if untrained else result.model


def _legend(figure: Figure, axis: plt.Axes) -> None:
    """One legend for the figure, below the panels."""
    handles, labels = axis.get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(6, len(labels)), fontsize=8)


def _grouped_bars(axis: plt.Axes, rows: Sequence[PairResult], value: str, log: bool = False) -> None:
    """Bars of one quantity: groups are categories, one bar per model."""
    categories = list(dict.fromkeys(r.category for r in rows))
    models = list(dict.fromkeys(r.model for r in rows))
    width = 0.8 / max(1, len(models))
    for index, model in enumerate(models):
        heights = []
        for category in categories:
            match = [r for r in rows if r.model == model and r.category == category and r.status == "ok"]
            number = (match[0].metrics.get(value) if value in METRICS else getattr(match[0], value)) if match else None
            heights.append(np.nan if number is None else number)
        positions = np.arange(len(categories)) + (index - (len(models) - 1) / 2) * width
        axis.bar(positions, heights, width, label=_label(next(r for r in rows if r.model == model)))
    axis.set_xticks(np.arange(len(categories)), categories, fontsize=8)
    if log:
        axis.set_yscale("log")


def plot_metrics(results: Sequence[PairResult], means: Sequence[PairResult], folder: Path) -> list[Path]:
    """Grouped bars per category and metric, and the cost chart; return the written paths."""
    rows = [*results, *means] if len({r.category for r in results}) > 1 else list(results)
    figure, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.6), squeeze=False)
    for axis, metric in zip(axes[0], METRICS, strict=True):
        _grouped_bars(axis, rows, metric)
        axis.set_title(TITLES[metric])
        axis.set_ylim(0, 1)
    _legend(figure, axes[0][0])
    figure.suptitle("Leaderboard, measured here", y=1.02)
    written = [_save(figure, folder / "metrics.png")]
    threads = sorted({r.threads for r in results})
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6), squeeze=False)
    costs = {
        "train_seconds": "training time (s, log)",
        "images_per_second": "inference images/s (log)",
        "model_size_mb": "model size (MB, log)",
    }
    for axis, (value, title) in zip(axes[0], costs.items(), strict=True):
        _grouped_bars(axis, results, value, log=True)
        axis.set_title(f"{title}, {'/'.join(map(str, threads))} thread(s)")
    _legend(figure, axes[0][0])
    written.append(_save(figure, folder / "cost.png"))
    return written


def plot_roc_curves(results: Sequence[PairResult], folder: Path) -> list[Path]:
    """One image-level ROC plot per category with every finished model; return the written paths."""
    written = []
    for category in dict.fromkeys(r.category for r in results):
        figure, axis = plt.subplots(figsize=(5, 5))
        for result in results:
            if result.category != category or result.status != "ok" or not result.roc:
                continue
            fpr, tpr = result.roc
            auroc = result.metrics.get("image_AUROC")
            axis.plot(fpr, tpr, label=f"{_label(result)}: AUROC {auroc:.3f}")
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        axis.set(xlabel="false positive rate", ylabel="true positive rate", title=f"image ROC, {category}")
        axis.legend(fontsize=7, loc="lower right")
        written.append(_save(figure, folder / f"roc_{category}.png"))
    return written
