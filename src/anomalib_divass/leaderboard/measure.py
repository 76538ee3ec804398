"""What the leaderboard measures, with anomalib's metrics and Lightning callbacks.

- :func:`leaderboard_evaluator`: anomalib's ``Evaluator`` with image/pixel AUROC and F1 and PRO
  (anomalib's ``AUPRO``, FPR limit 0.3), the same for every model. Its image AUROC keeps the ROC
  curve it integrated (:class:`CurveAUROC`), for the ROC plots.
- :class:`InferenceTimer`: wall time of the test batches (pre-processing and forward pass, not
  data loading, post-processing or metrics) and the number of images, for images/s.
- :class:`EpochProgress`: one line per training epoch with elapsed and remaining time.
- :func:`model_size_mb`: size of the torch model's parameters and buffers (memory banks and
  Gaussian statistics included), as it is stored in a checkpoint.

Example:
    >>> evaluator, roc = leaderboard_evaluator()
    >>> sorted(metric.name for metric in evaluator.test_metrics)
    ['image_AUROC', 'image_F1Score', 'pixel_AUPRO', 'pixel_AUROC', 'pixel_F1Score']
    >>> roc.curve is None
    True

"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from anomalib.metrics import AUPRO, AUROC, Evaluator, F1Score
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

__all__ = ["CurveAUROC", "EpochProgress", "InferenceTimer", "format_seconds", "leaderboard_evaluator", "model_size_mb"]


class CurveAUROC(AUROC):
    """anomalib's ``AUROC`` that also keeps the ROC curve it integrated (``curve``: FPR and TPR lists)."""

    def __init__(self, **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__(**kwargs)
        self.name = self.name.removesuffix(type(self).__name__) + "AUROC"  # logged as anomalib's AUROC
        self.curve: tuple[list[float], list[float]] | None = None

    def compute(self) -> torch.Tensor:
        """The AUROC; stores the curve as a side effect."""
        value = super().compute()
        if value is not None:
            fpr, tpr = self._compute()
            self.curve = (fpr.tolist(), tpr.tolist())
        return value


def leaderboard_evaluator() -> tuple[Evaluator, CurveAUROC]:
    """The evaluator every contestant is tested with, and its curve-keeping image AUROC.

    Pixel metrics are not strict: a model without anomaly maps (GANomaly) gets none.
    """
    image_auroc = CurveAUROC(fields=["pred_score", "gt_label"], prefix="image_")
    test_metrics = [
        image_auroc,
        F1Score(fields=["pred_label", "gt_label"], prefix="image_"),
        AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
        F1Score(fields=["pred_mask", "gt_mask"], prefix="pixel_", strict=False),
        AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
    ]
    return Evaluator(test_metrics=test_metrics), image_auroc


class InferenceTimer(Callback):
    """Time spent in test batches (pre-processing and forward pass) and the images they held."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.images = 0
        self._start = 0.0

    def on_test_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, *args: Any) -> None:  # noqa: ANN401
        """Start the clock."""
        del trainer, pl_module, batch, args
        self._start = time.perf_counter()

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:  # noqa: ANN401
        """Stop the clock; count the images (``args``: outputs, batch, batch index)."""
        del trainer, pl_module
        batch = args[1]
        self.seconds += time.perf_counter() - self._start
        self.images += int(batch.image.shape[0])

    @property
    def images_per_second(self) -> float:
        """Test images per second (NaN before any test batch)."""
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def format_seconds(seconds: float) -> str:
    """``H:MM:SS``.

    Example:
        >>> format_seconds(3725.4)
        '1:02:05'
    """
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class EpochProgress(Callback):
    """Print each finished training epoch with elapsed and estimated remaining time of the fit.

    A resumed fit estimates from the epochs it trained itself, not from those before the interruption.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self._start = 0.0
        self._first_epoch = 0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the clock (``current_epoch`` is the restored one when the fit resumes)."""
        del pl_module
        self._start = time.perf_counter()
        self._first_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """One progress line."""
        del pl_module
        done, total = trainer.current_epoch + 1, trainer.max_epochs
        elapsed = time.perf_counter() - self._start
        trained = max(1, done - self._first_epoch)
        remaining = elapsed / trained * (total - done) if total and total > 0 else float("nan")
        print(
            f"    {self.label}: epoch {done}/{total}, elapsed {format_seconds(elapsed)}, "
            f"remaining ~{format_seconds(remaining) if math.isfinite(remaining) else '?'}",
            flush=True,
        )


def model_size_mb(model: nn.Module) -> float:
    """Megabytes of the parameters and buffers of ``model`` (its state dict).

    Example:
        >>> round(model_size_mb(nn.Linear(1000, 250)), 3)
        1.001
    """
    return sum(t.numel() * t.element_size() for t in model.state_dict().values() if torch.is_tensor(t)) / 1e6
