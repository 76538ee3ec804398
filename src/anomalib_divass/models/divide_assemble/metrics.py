"""AUROC that reports NaN, with a warning, where it is undefined (a test set of one class).

anomalib's ``AUROC`` returns 0.0 when every label is the same (a test set without anomalous images, or
without anomalous pixels): the worst possible score for a quantity that does not exist, printed as if it had
been measured. :class:`DefinedAUROC` returns NaN instead and logs why; its name in the results stays
``<prefix>AUROC``.

Example:
    >>> from anomalib.data import ImageBatch
    >>> metric = DefinedAUROC(fields=["pred_score", "gt_label"], prefix="image_")
    >>> batch = ImageBatch(image=torch.zeros(2, 3, 8, 8), pred_score=torch.tensor([0.2, 0.7]),
    ...                    gt_label=torch.tensor([0, 0]))
    >>> metric.update(batch)
    >>> metric.compute()
    tensor(nan)
    >>> metric.name
    'image_AUROC'

"""

from __future__ import annotations

import logging
from typing import Any

import torch
from anomalib.metrics import AUROC

__all__ = ["DefinedAUROC"]

logger = logging.getLogger(__name__)


class DefinedAUROC(AUROC):
    """anomalib's ``AUROC``, NaN (and a logged warning) when the labels hold only one class.

    Args:
        fields: Batch fields: scores then labels (``["pred_score", "gt_label"]`` or ``["anomaly_map", "gt_mask"]``).
        prefix: Prefix of the metric's name (``image_``, ``pixel_``).
        kwargs: Passed to anomalib's ``AUROC`` (e.g. ``strict``).

    """

    def __init__(self, fields: list[str] | None = None, prefix: str = "", **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__(fields=fields, prefix=prefix, **kwargs)
        self.name = f"{prefix}AUROC"  # anomalib names metrics after their class
        self._warned = False

    def compute(self) -> torch.Tensor:
        """The area under the ROC curve, or NaN if the labels seen hold only normal or only anomalous samples.

        Returns:
            The AUROC (``None`` if nothing was seen and the metric is not strict, as anomalib's).

        """
        labels = self._labels()
        if labels is not None and labels.numel() and bool(labels.min() == labels.max()):
            if not self._warned:
                only = "anomalous" if bool(labels.max()) else "normal"
                kind = "pixels" if self.name.startswith("pixel_") else "images"
                logger.warning(
                    "%s is undefined and reported as NaN (not 0.0): every one of the %d %s scored is %s, and an "
                    "AUROC needs normal and anomalous ones. Evaluate on a test set with both (for MVTec AD: "
                    "test/good and test/<defect> with its ground_truth masks).",
                    self.name,
                    labels.numel(),
                    kind,
                    only,
                )
                self._warned = True
            return torch.tensor(float("nan"))
        return super().compute()

    def _labels(self) -> torch.Tensor | None:
        """The labels gathered so far (``None`` if the metric keeps binned counts instead)."""
        target = getattr(self, "target", None)
        if isinstance(target, list):
            return torch.cat([labels.flatten() for labels in target]) if target else None
        return target if isinstance(target, torch.Tensor) else None
