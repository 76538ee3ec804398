"""The granularity sweep: train every setting once, score synthetic and (optionally) real defects.

Every setting is trained once on the normal training images minus a held-out part. The same
network then scores (a) the held-out images, clean and with synthetic defects, which is all the
automatic choice may look at, and (b) the real labelled test set, when one is given, for the
paper's claim and the oracle. DAAD and DAAD+ are two anomaly maps of one forward pass. Rows are
appended to a CSV after every setting, so an interrupted sweep resumes where it stopped.

Example:
    >>> from anomalib_divass.granularity.settings import sweep_settings
    >>> rows = run_sweep(train_data, sweep_settings([1, 4]), epochs=20, test_dataset=test_data)  # doctest: +SKIP

"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from anomalib.data.datasets.base.image import AnomalibDataset

from .evaluation import (
    DEFAULT_BATCH_SIZE,
    ScoredSet,
    dataset_batches,
    resolve_device,
    score_batches,
    seeded,
    separation,
    train_setting,
)
from .settings import GranularitySetting
from .synthetic import DEFAULT_HOLDOUT, holdout_split, synthetic_defects

__all__ = ["FIELDS", "SyntheticSet", "make_synthetic_set", "read_rows", "run_sweep"]

logger = logging.getLogger(__name__)

METRICS = ("normal_error", "abnormal_error", "error_gap", "image_AUROC", "pixel_AUROC")
FIELDS = (
    "setting",
    "variant",
    "block_size",
    "granularity",
    "use_memory",
    *METRICS,
    *(f"synthetic_{name}" for name in METRICS),
    "epochs",
    "train_images",
    "heldout_images",
    "test_images",
    "train_seconds",
    "score_seconds",
)


class SyntheticSet:
    """Held-out normal images twice: clean (label 0) and with a synthetic defect (label 1).

    Args:
        images: Clean held-out images ``(M, C, H, W)`` at the model's input size.
        seed: Seed of the synthetic defects.

    """

    def __init__(self, images: torch.Tensor, seed: int = 0) -> None:
        self.clean = images if images.shape[1] != 1 else images.expand(-1, 3, -1, -1)
        self.defective, masks = synthetic_defects(self.clean, seed=seed)
        self.masks = torch.cat([torch.zeros_like(masks), masks])
        self.labels = torch.cat([torch.zeros(len(images)), torch.ones(len(images))]).long()

    def __len__(self) -> int:
        """Number of held-out images (each appears clean and defective)."""
        return len(self.clean)

    def batches(self, batch_size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(images, masks, labels)`` batches: the clean images, then the defective ones."""
        images = torch.cat([self.clean, self.defective])
        return [
            (images[i : i + batch_size], self.masks[i : i + batch_size], self.labels[i : i + batch_size])
            for i in range(0, len(images), batch_size)
        ]


def make_synthetic_set(heldout: AnomalibDataset, seed: int = 0) -> SyntheticSet:
    """Load the held-out normal images (resized by the dataset) and give them synthetic defects."""
    images = torch.cat([images for images, _, _ in dataset_batches(heldout)])
    return SyntheticSet(images, seed=seed)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a sweep CSV, numbers as floats (empty list if the file does not exist)."""
    if not path.is_file():
        return []
    with path.open() as file:
        rows = list(csv.DictReader(file))
    text_fields = {"setting", "variant", "block_size", "granularity", "use_memory"}
    return [{k: (v if k in text_fields else float(v)) for k, v in row.items()} for row in rows]


def _append_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def run_sweep(
    train_dataset: AnomalibDataset,
    settings: Sequence[GranularitySetting],
    epochs: int,
    test_dataset: AnomalibDataset | None = None,
    latent_weights: Mapping[str, float] | None = None,
    holdout: float = DEFAULT_HOLDOUT,
    csv_path: Path | None = None,
    model_arguments: Mapping[str, Any] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    max_train_images: int | None = None,
    on_setting: Callable[[GranularitySetting, list[dict[str, Any]]], None] | None = None,
    num_workers: int = 0,
    device: torch.device | str | None = None,
) -> list[dict[str, Any]]:
    """Train and score every setting; one row per setting and variant.

    Args:
        train_dataset: Normal training images, resized to the model's input size by its augmentations.
        settings: The settings to compare.
        epochs: Training epochs per setting.
        test_dataset: The real labelled test set, or ``None`` (the automatic choice never passes it).
        latent_weights: Variant name to latent weight; default ``{"DAAD": 0.0}``.
        holdout: Fraction of the training images held out for the synthetic defects.
        csv_path: Where rows are appended after every setting; settings already there are skipped.
        model_arguments: Further ``DivideAssemble`` arguments.
        batch_size: Training batch size.
        seed: Seed of the split, the defects and the training.
        max_train_images: Train on at most this many images (a random subset) to save time.
        on_setting: Called with each finished setting and its rows.
        num_workers: Data-loading workers of the training.
        device: Where every setting is trained and scored (see :func:`~.evaluation.resolve_device`).

    Returns:
        All rows (resumed and new), in ``FIELDS`` order; real-test metrics are NaN without a test set.
        The process's random state is the same afterwards (see :func:`~.evaluation.seeded`).

    """
    device = resolve_device(device)
    with seeded(seed, device):  # data loaders draw from the global generator: leave the caller's state alone
        latent_weights = dict(latent_weights or {"DAAD": 0.0})
        train_indices, heldout_indices = holdout_split(len(train_dataset), holdout, seed)
        if max_train_images is not None and len(train_indices) > max_train_images:
            order = torch.randperm(len(train_indices), generator=torch.Generator().manual_seed(seed + 1))
            keep = order[:max_train_images]
            train_indices = sorted(train_indices[i] for i in keep.tolist())
        training = train_dataset.subsample(train_indices)
        synthetic = make_synthetic_set(train_dataset.subsample(heldout_indices), seed=seed)
        rows = read_rows(csv_path) if csv_path is not None else []
        done = {(row["setting"], row["variant"]) for row in rows if int(row["epochs"]) == epochs}
        for setting in settings:
            if all((setting.name, variant) in done for variant in latent_weights):
                logger.info("Granularity %s: already in %s, skipped.", setting.name, csv_path)
                continue
            start = time.perf_counter()
            model = train_setting(setting, training, epochs, model_arguments, batch_size, num_workers, seed, device)
            train_seconds = time.perf_counter() - start
            start = time.perf_counter()
            synthetic_scores = score_batches(model, synthetic.batches(), latent_weights)
            test_scores: ScoredSet | None = None
            if test_dataset is not None:
                test_scores = score_batches(model, dataset_batches(test_dataset), latent_weights)
            score_seconds = time.perf_counter() - start
            new_rows = []
            for variant in latent_weights:
                real = dict.fromkeys(METRICS, float("nan"))
                if test_scores is not None:
                    real = separation(test_scores, variant)
                row = {
                    "setting": setting.name,
                    "variant": variant,
                    "block_size": "" if setting.block_size is None else str(setting.block_size),
                    "granularity": " ".join(str(k) for k in setting.granularity),
                    "use_memory": str(setting.use_memory),
                    **real,
                    **{f"synthetic_{k}": v for k, v in separation(synthetic_scores, variant).items()},
                    "epochs": epochs,
                    "train_images": len(training),
                    "heldout_images": len(synthetic),
                    "test_images": len(test_dataset) if test_dataset is not None else 0,
                    "train_seconds": round(train_seconds, 1),
                    "score_seconds": round(score_seconds, 1),
                }
                new_rows.append(row)
            if csv_path is not None:
                _append_rows(csv_path, new_rows)
            rows.extend(new_rows)
            if on_setting is not None:
                on_setting(setting, new_rows)
        names = [setting.name for setting in settings]
        return [row for row in rows if row["setting"] in names and row["variant"] in latent_weights]
