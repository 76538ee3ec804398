"""Choose the granularity without anomaly labels: judge every setting on synthetic defects.

The choice looks only at normal training images. :func:`auto_granularity` holds out part of them,
trains every candidate setting on the rest (:func:`candidate_settings`, in a plain loop that leaves the
process's random state alone), pastes synthetic defects on the held-out images and
keeps the setting that rebuilds the defective copies worst relative to the clean ones: the largest
gap between their mean squared reconstruction errors (criterion ``"error_gap"``, the paper's gap
between abnormal and normal errors). The mean synthetic image and pixel AUROC (``"auroc"``) is
the alternative; on bottle it saturated near 1 for every setting, the vanilla autoencoder included
(see ``docs/granularity``). The choice never receives a test set. Before training, the
:class:`~.callback.ChooseGranularity` callback runs it for ``DivideAssemble(granularity="auto")``;
``anomalib-divass granularity choose`` runs it alone.

Example:
    >>> rows = [
    ...     {"setting": "k=1", "variant": "DAAD", "granularity": "1 1", "use_memory": "True",
    ...      "synthetic_error_gap": 0.002, "synthetic_image_AUROC": 0.99, "synthetic_pixel_AUROC": 0.95},
    ...     {"setting": "k=4", "variant": "DAAD", "granularity": "4 2", "use_memory": "True",
    ...      "synthetic_error_gap": 0.007, "synthetic_image_AUROC": 0.98, "synthetic_pixel_AUROC": 0.94},
    ... ]
    >>> choose_setting(rows).granularity, choose_setting(rows, criterion="auroc").granularity
    ((4, 2), (1, 1))

"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from anomalib.data.datasets.base.image import AnomalibDataset

from ..models.divide_assemble.lightning_model import AUTO
from ..models.divide_assemble.torch_model import input_size_multiple
from ..models.divide_assemble.variants import Variant
from .evaluation import DEFAULT_BATCH_SIZE, model_defaults
from .settings import DEFAULT_GRANULARITY, GranularitySetting, sweep_settings
from .sweep import run_sweep
from .synthetic import DEFAULT_HOLDOUT

__all__ = [
    "AUTO",
    "DEFAULT_AUTO_BLOCK_SIZES",
    "DEFAULT_AUTO_EPOCHS",
    "DEFAULT_CRITERION",
    "GranularityChoice",
    "auto_granularity",
    "candidate_settings",
    "check_criterion",
    "choose_setting",
    "oracle_setting",
    "selection_score",
]

# The defaults of the automatic choice, written once (ChooseGranularity and `granularity choose` read them).
DEFAULT_AUTO_EPOCHS = 10  # training epochs of every candidate
DEFAULT_AUTO_BLOCK_SIZES: tuple[int | str, ...] = (1, 2, 4, 8, 16, 32, "whole")
DEFAULT_CRITERION = "error_gap"


@dataclass(frozen=True)
class GranularityChoice:
    """The chosen setting and why.

    Attributes:
        setting: Name of the chosen setting.
        granularity: Its block side per scale, finest first.
        score: Its selection score under ``criterion``.
        ranking: ``(setting, selection score)`` of every candidate, best first.
        criterion: The criterion used, a key of :data:`CRITERIA`.

    """

    setting: str
    granularity: tuple[int, ...]
    score: float
    ranking: tuple[tuple[str, float], ...]
    criterion: str = DEFAULT_CRITERION

    @property
    def reason(self) -> str:
        """One sentence a user can read in the log."""
        others = ", ".join(f"{name} {score:.3g}" for name, score in self.ranking[1:])
        return (
            f"granularity {list(self.granularity)} ({self.setting}) {CRITERIA[self.criterion]} on held-out normal "
            f"training images with synthetic defects: {self.score:.3g} (others: {others or 'none'})."
        )


CRITERIA = {
    "error_gap": "leaves synthetic defects the largest reconstruction-error gap over their clean copies",
    "auroc": "separates synthetic defects best (mean of image and pixel AUROC)",
}


def selection_score(row: Mapping[str, Any], criterion: str = DEFAULT_CRITERION) -> float:
    """How well a sweep row's setting singles out synthetic defects (higher is better).

    Args:
        row: A sweep row; only its ``synthetic_*`` columns are read.
        criterion: ``"error_gap"``: mean squared reconstruction error of the defective copies minus that
            of the clean ones (the paper's gap between abnormal and normal errors, measured on synthetic
            defects); ``"auroc"``: mean of the synthetic image and pixel AUROC.

    Returns:
        The score.

    Raises:
        ValueError: For an unknown criterion.

    """
    if criterion == "error_gap":
        return float(row["synthetic_error_gap"])
    check_criterion(criterion)
    values = [float(row["synthetic_image_AUROC"]), float(row["synthetic_pixel_AUROC"])]
    values = [value for value in values if not math.isnan(value)]
    return sum(values) / len(values) if values else float("nan")


def check_criterion(criterion: str) -> None:
    """Raise a ``ValueError`` naming the criteria when ``criterion`` is not one of :data:`CRITERIA`."""
    if criterion not in CRITERIA:
        msg = f"Unknown granularity criterion {criterion!r}: use one of {', '.join(CRITERIA)}."
        raise ValueError(msg)


def _memory_rows(rows: Sequence[Mapping[str, Any]], variant: str) -> list[Mapping[str, Any]]:
    candidates = [row for row in rows if row["variant"] == variant and str(row["use_memory"]) == "True"]
    if not candidates:
        msg = f"No block-memory setting of variant {variant!r} in the sweep rows: nothing to choose from."
        raise ValueError(msg)
    return candidates


def _granularity(row: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(int(k) for k in str(row["granularity"]).split())


def choose_setting(
    rows: Sequence[Mapping[str, Any]], variant: str = "DAAD", criterion: str = DEFAULT_CRITERION
) -> GranularityChoice:
    """The block-memory setting with the highest :func:`selection_score` (ties: the earlier, finer one).

    Args:
        rows: Sweep rows (only their ``synthetic_*`` columns are read).
        variant: Anomaly-map variant, ``"DAAD"`` or ``"DAAD+"``.
        criterion: See :func:`selection_score`.

    Returns:
        The :class:`GranularityChoice`.

    """
    ranked = sorted(_memory_rows(rows, variant), key=lambda row: -selection_score(row, criterion))
    best = ranked[0]
    return GranularityChoice(
        setting=str(best["setting"]),
        granularity=_granularity(best),
        score=selection_score(best, criterion),
        ranking=tuple((str(row["setting"]), selection_score(row, criterion)) for row in ranked),
        criterion=criterion,
    )


def oracle_setting(rows: Sequence[Mapping[str, Any]], variant: str = "DAAD") -> Mapping[str, Any]:
    """The block-memory row with the best real test image AUROC (ties: pixel AUROC). For validation only."""
    return max(
        _memory_rows(rows, variant),
        key=lambda row: (float(row["image_AUROC"]), float(row["pixel_AUROC"])),
    )


def candidate_settings(
    block_sizes: Sequence[int | str], image_size: Sequence[int], num_scales: int
) -> list[GranularitySetting]:
    """The block-memory settings the automatic choice trains: the uniform block sizes, plus the default if it fits.

    Args:
        block_sizes: Uniform block sides (powers of two) and/or ``"whole"``.
        image_size: ``(height, width)`` of the model's input.
        num_scales: Number of stride-2 stages of the network.

    Returns:
        The settings, finest first; the model's ``DEFAULT_GRANULARITY`` last when it has ``num_scales``
        entries and fits ``image_size``.

    Example:
        >>> [s.name for s in candidate_settings([4, "whole"], (256, 256), 5)]
        ['k=4', 'whole map', 'default']
        >>> [s.granularity for s in candidate_settings([4, "whole"], (64, 64), 2)]
        [(4, 4), (32, 16)]

    """
    default = DEFAULT_GRANULARITY if len(DEFAULT_GRANULARITY) == num_scales else None
    if default is not None and any(int(side) % input_size_multiple(default) for side in image_size):
        default = None
    return sweep_settings(block_sizes, image_size, num_scales, default, vanilla=False)


def auto_granularity(
    train_dataset: AnomalibDataset,
    image_size: Sequence[int],
    epochs: int = DEFAULT_AUTO_EPOCHS,
    model_arguments: Mapping[str, Any] | None = None,
    block_sizes: Sequence[int | str] = DEFAULT_AUTO_BLOCK_SIZES,
    holdout: float = DEFAULT_HOLDOUT,
    seed: int = 0,
    criterion: str = DEFAULT_CRITERION,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int = 0,
    device: torch.device | str | None = None,
) -> GranularityChoice:
    """Choose the granularity from normal training images only.

    The process's random state is the same afterwards (every candidate is trained under
    :func:`~.evaluation.seeded`), and nothing but ``train_dataset`` is read.

    Args:
        train_dataset: Normal training images, resized to ``image_size`` by their augmentations.
        image_size: ``(height, width)`` of the model's input.
        epochs: Training epochs of every candidate.
        model_arguments: Further ``DivideAssemble`` arguments, as for the final model (same network); with
            ``variant="DAAD+"`` the DAAD+ map (its ``latent_weight``) is judged, else the DAAD map.
        block_sizes: Uniform block sizes tried (plus the model's default when it fits, see
            :func:`candidate_settings`).
        holdout: Fraction of the training images held out for the synthetic defects.
        seed: Seed of the split, the defects and the trainings.
        criterion: See :func:`selection_score`.
        batch_size: Training batch size of every candidate.
        num_workers: Data-loading workers.
        device: Where the candidates are trained (see :func:`~.evaluation.resolve_device`).

    Returns:
        The :class:`GranularityChoice`.

    """
    check_criterion(criterion)
    arguments = {**model_defaults(), **dict(model_arguments or {})}
    arguments.pop("granularity", None)
    candidates = candidate_settings(block_sizes, image_size, len(arguments["channels"]))
    variant = "DAAD+" if Variant(arguments["variant"]).scores_latent else "DAAD"
    latent_weight = float(arguments["latent_weight"]) if variant == "DAAD+" else 0.0
    rows = run_sweep(
        train_dataset,
        candidates,
        epochs,
        test_dataset=None,
        latent_weights={variant: latent_weight},
        holdout=holdout,
        model_arguments=arguments,
        batch_size=batch_size,
        seed=seed,
        num_workers=num_workers,
        device=device,
    )
    return choose_setting(rows, variant, criterion)
