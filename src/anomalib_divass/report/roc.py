"""Image-level ROC curve and AUROC of a report's rows, and the curve as an inline SVG (no plotting library).

Example:
    >>> auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    >>> roc_curve([0.1, 0.9], [0, 1])
    ([0.0, 0.0, 1.0], [0.0, 1.0, 1.0])

"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["auroc", "roc_curve", "roc_svg"]


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve (ties count one half), or ``None`` without both classes.

    Args:
        scores: Anomaly scores.
        labels: 1 anomalous, 0 normal.

    Returns:
        The AUROC in ``[0, 1]``.

    """
    scores_array, labels_array = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    positives, negatives = int(labels_array.sum()), int((labels_array == 0).sum())
    if positives == 0 or negatives == 0:
        return None
    _, inverse, counts = np.unique(scores_array, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # average rank of tied scores, from 1
    return float((ranks[labels_array == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def roc_curve(scores: Sequence[float], labels: Sequence[int]) -> tuple[list[float], list[float]]:
    """False and true positive rates at every distinct threshold, from ``(0, 0)`` to ``(1, 1)``.

    Args:
        scores: Anomaly scores.
        labels: 1 anomalous, 0 normal (both present).

    Returns:
        ``(fpr, tpr)``.

    """
    scores_array, labels_array = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    order = np.argsort(-scores_array, kind="stable")
    scores_array, labels_array = scores_array[order], labels_array[order]
    last = np.r_[np.flatnonzero(np.diff(scores_array)), scores_array.size - 1]  # last index of each distinct score
    true_positives = np.cumsum(labels_array)[last]
    false_positives = (last + 1) - true_positives
    tpr = np.r_[0.0, true_positives / max(int(labels_array.sum()), 1)]
    fpr = np.r_[0.0, false_positives / max(int((labels_array == 0).sum()), 1)]
    return [float(x) for x in fpr], [float(y) for y in tpr]


def roc_svg(scores: Sequence[float], labels: Sequence[int], size: int = 220, max_points: int = 400) -> str:
    """The ROC curve as an inline SVG element (axes, chance diagonal, curve; at most ``max_points`` vertices).

    Args:
        scores: Anomaly scores.
        labels: 1 anomalous, 0 normal (both present).
        size: Side of the plot area in CSS pixels.
        max_points: Vertices kept (the curve of 10,000 images is thinned evenly).

    Returns:
        ``<svg ...>...</svg>``.

    """
    fpr, tpr = roc_curve(scores, labels)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = [fpr[i] for i in keep], [tpr[i] for i in keep]
    margin = 36
    total = size + margin + 10

    def x(value: float) -> float:
        return margin + value * size

    def y(value: float) -> float:
        return 10 + (1 - value) * size

    points = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(fpr, tpr, strict=True))
    ticks = "".join(
        f'<text x="{x(t):.0f}" y="{y(0) + 14:.0f}" text-anchor="middle">{t:g}</text>'
        f'<text x="{margin - 4}" y="{y(t) + 4:.0f}" text-anchor="end">{t:g}</text>'
        for t in (0, 0.5, 1)
    )
    return (
        f'<svg class="roc" role="img" aria-label="ROC curve" width="{total}" height="{total}" '
        f'viewBox="0 0 {total} {total}">'
        f'<rect x="{margin}" y="10" width="{size}" height="{size}" fill="none" stroke="#999"/>'
        f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}" stroke="#bbb" stroke-dasharray="4 3"/>'
        f'<polyline points="{points}" fill="none" stroke="#c0392b" stroke-width="2"/>'
        f'<g font-size="10" fill="#444">{ticks}'
        f'<text x="{x(0.5)}" y="{total - 2}" text-anchor="middle">false positive rate</text>'
        f'<text transform="translate(10 {y(0.5)}) rotate(-90)" text-anchor="middle">true positive rate</text></g>'
        "</svg>"
    )
