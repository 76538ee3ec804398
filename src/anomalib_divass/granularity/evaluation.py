"""Train one granularity setting with anomalib's ``Engine`` and score image sets with it.

One trained network serves every score: DAAD (reconstruction error) and DAAD+ (plus the
discriminator's latent error) are read from the same forward pass, on held-out images with
synthetic defects and, when given, on the real test set.

Example:
    >>> import torch
    >>> from anomalib_divass import DivideAssemble
    >>> model = DivideAssemble(channels=[8, 16], granularity=[2, 1], pre_processor=False)
    >>> batch = (torch.rand(2, 3, 32, 32), torch.zeros(2, 1, 32, 32), torch.tensor([0, 1]))
    >>> scored = score_batches(model, [batch], {"DAAD": 0.0, "DAAD+": 0.01})
    >>> scored.scores["DAAD+"].shape, scored.maps["DAAD"].shape
    (torch.Size([2]), torch.Size([2, 32, 32]))

"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from anomalib.callbacks.checkpoint import ModelCheckpoint
from anomalib.data.datasets.base.image import AnomalibDataset
from anomalib.engine import Engine
from lightning.pytorch import seed_everything
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import binary_auroc

from ..models import DivideAssemble
from .settings import GranularitySetting

__all__ = ["ScoredSet", "dataset_batches", "score_batches", "separation", "train_setting"]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class ScoredSet:
    """Scores of one image set under one trained network.

    Attributes:
        labels: Image labels ``(N,)``, 1 = anomalous.
        errors: Mean squared reconstruction error per image ``(N,)``.
        scores: Image score ``(N,)`` per variant name.
        maps: Anomaly map ``(N, H, W)`` per variant name.
        masks: Ground-truth masks ``(N, H, W)``, boolean.

    """

    labels: torch.Tensor
    errors: torch.Tensor
    scores: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor]
    masks: torch.Tensor


def train_setting(
    setting: GranularitySetting,
    train_dataset: AnomalibDataset,
    epochs: int,
    workdir: Path,
    model_arguments: Mapping[str, Any] | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    seed: int = 0,
) -> DivideAssemble:
    """Train ``DivideAssemble`` with the setting's granularity on ``train_dataset``.

    The dataset must already resize to the model's input size (its ``augmentations``). No
    checkpoint, logger or post-processing: the sweep reads raw scores.

    Args:
        setting: Granularity and memory switch.
        train_dataset: Normal training images.
        epochs: Training epochs.
        workdir: Scratch folder of the ``Engine``.
        model_arguments: Further ``DivideAssemble`` arguments (``channels``, ``num_items``, ...).
        batch_size: Training batch size.
        num_workers: Data-loading workers.
        seed: Seed of weights and shuffling, the same for every setting.

    Returns:
        The trained model, in eval mode.

    """
    seed_everything(seed, verbose=False)
    # A copy per setting: no module (a shared pre-processor, say) is trained or switched to eval twice.
    arguments = {
        **copy.deepcopy(dict(model_arguments or {})),
        "granularity": setting.granularity,
        "use_memory": setting.use_memory,
    }
    model = DivideAssemble(**arguments, post_processor=False, evaluator=False, visualizer=False)
    loader = DataLoader(
        train_dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        collate_fn=train_dataset.collate_fn,
        generator=torch.Generator().manual_seed(seed),
    )
    engine = Engine(
        max_epochs=epochs,
        logger=False,
        default_root_dir=workdir,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=workdir, save_top_k=0, save_last=False)],
    )
    engine.fit(model, train_dataloaders=loader)
    return model.eval()


def dataset_batches(dataset: AnomalibDataset, batch_size: int = 16, num_workers: int = 0) -> Iterable[Batch]:
    """``(images, masks, labels)`` batches of an anomalib dataset (already resized by its augmentations)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=dataset.collate_fn)
    for batch in loader:
        masks = batch.gt_mask if batch.gt_mask is not None else torch.zeros_like(batch.image[:, :1])
        yield batch.image, masks, batch.gt_label


@torch.no_grad()
def score_batches(model: DivideAssemble, batches: Iterable[Batch], latent_weights: Mapping[str, float]) -> ScoredSet:
    """Score image batches with one network under several anomaly-map variants.

    The network's own ``AnomalyMapGenerator`` (smoothing, image score) builds every map; a
    variant only changes its ``latent_weight`` (0: DAAD, > 0: DAAD+).

    Args:
        model: A trained ``DivideAssemble``.
        batches: ``(images (B, C, H, W), masks (B, 1, H, W) or (B, H, W), labels (B,))`` at the model's input size.
        latent_weights: Variant name to latent weight, e.g. ``{"DAAD": 0.0, "DAAD+": 0.01}``.

    Returns:
        The :class:`ScoredSet` of all batches.

    """
    network = model.model.eval()
    generators = {}
    for name, weight in latent_weights.items():
        generators[name] = copy.copy(network.anomaly_map)
        generators[name].latent_weight = weight
    labels, errors, masks = [], [], []
    scores: dict[str, list[torch.Tensor]] = {name: [] for name in latent_weights}
    maps: dict[str, list[torch.Tensor]] = {name: [] for name in latent_weights}
    for batch_images, batch_masks, batch_labels in batches:
        images = batch_images
        if images.shape[1] == 1 and network.in_channels != 1:
            images = images.expand(-1, network.in_channels, -1, -1)
        reconstruction = network.autoencoder(images).image
        latent = latent_reconstructed = None
        if any(weight > 0 for weight in latent_weights.values()):
            _, latent = network.discriminator(images)
            _, latent_reconstructed = network.discriminator(reconstruction)
        for name, generator in generators.items():
            anomaly_map = generator(images, reconstruction, latent, latent_reconstructed)
            scores[name].append(generator.score(anomaly_map))
            maps[name].append(anomaly_map[:, 0])
        errors.append((images - reconstruction).pow(2).flatten(1).mean(dim=1))
        labels.append(batch_labels.long())
        masks.append(batch_masks.reshape(images.shape[0], *images.shape[-2:]) > 0)
    return ScoredSet(
        labels=torch.cat(labels),
        errors=torch.cat(errors),
        scores={name: torch.cat(values) for name, values in scores.items()},
        maps={name: torch.cat(values) for name, values in maps.items()},
        masks=torch.cat(masks),
    )


def separation(scored: ScoredSet, variant: str) -> dict[str, float]:
    """How well one variant separates the anomalous images (and pixels) from the normal ones.

    Args:
        scored: Scores of an image set with both normal and anomalous images.
        variant: Variant name (a key of ``scored.scores``).

    Returns:
        ``normal_error`` and ``abnormal_error`` (mean squared reconstruction error of each group),
        ``error_gap`` (their difference), ``image_AUROC`` and ``pixel_AUROC``.

    Raises:
        ValueError: If the set lacks normal or anomalous images.

    """
    normal, abnormal = scored.labels == 0, scored.labels == 1
    if not normal.any() or not abnormal.any():
        msg = f"Separation needs normal and anomalous images; got {int(normal.sum())} and {int(abnormal.sum())}."
        raise ValueError(msg)
    normal_error, abnormal_error = scored.errors[normal].mean().item(), scored.errors[abnormal].mean().item()
    pixel_auroc = float("nan")
    if scored.masks.any():
        pixel_auroc = binary_auroc(scored.maps[variant].flatten(), scored.masks.flatten().long()).item()
    return {
        "normal_error": normal_error,
        "abnormal_error": abnormal_error,
        "error_gap": abnormal_error - normal_error,
        "image_AUROC": binary_auroc(scored.scores[variant], scored.labels).item(),
        "pixel_AUROC": pixel_auroc,
    }
