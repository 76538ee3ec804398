"""Held-out normal training images, and the statistics of their anomaly maps.

When the anomaly map is normalised (``normalization`` ``"global"`` or ``"pixel"``), a fifth of the
training images, chosen by a hash of the file name (so the same images on every machine, every epoch
and every process), is never trained on. Every epoch, their reconstruction and latent errors are
measured with the current weights in eval mode (:class:`NormalStatisticsCollector`); before each
validation the statistics are summed over processes and stored in the anomaly map's buffers, so
validation, test, checkpoints and exports use those of the trained weights.

Example:
    >>> heldout_mask(["a/004.png", "a/005.png", "a/006.png", "b/005.png"]).tolist()
    [False, True, True, True]

"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .anomaly_map import Normalization, NormalStatistics
from .map_choice import MapChoice, candidate_criteria, map_candidates
from .torch_model import DivideAssembleModel

__all__ = ["HELDOUT_MODULUS", "KEPT_IMAGES", "NormalStatisticsCollector", "heldout_mask"]

HELDOUT_MODULUS = 5  # one training image in five is held out
KEPT_IMAGES = 64  # held-out images kept per epoch (and process) for the automatic choice of the map


def heldout_mask(image_paths: Sequence[str] | None, batch_size: int | None = None) -> torch.Tensor:
    """Which images of a batch are held out of training: those whose file-name hash is 0 modulo 5.

    Args:
        image_paths: The batch's image paths, or ``None`` (e.g. tensors without files).
        batch_size: Batch size when there are no paths: then the last image of every five positions
            is held out (a different image each epoch when the loader shuffles).

    Returns:
        Boolean mask ``(B,)``.

    """
    if image_paths is None:
        return torch.arange(batch_size or 0) % HELDOUT_MODULUS == HELDOUT_MODULUS - 1
    return torch.tensor(
        [zlib.crc32(Path(path).name.encode("utf-8")) % HELDOUT_MODULUS == 0 for path in image_paths], dtype=torch.bool
    )


class NormalStatisticsCollector:
    """Accumulate, over an epoch, the error maps of held-out normal images; store them in the map's buffers.

    Args:
        model: The network whose ``anomaly_map`` receives the statistics.

    Example:
        >>> from anomalib_divass.models.divide_assemble.anomaly_map import AnomalyMapGenerator
        >>> from anomalib_divass.models.divide_assemble.discriminator import Discriminator
        >>> from anomalib_divass.models.divide_assemble.torch_model import MemoryAutoencoder
        >>> model = DivideAssembleModel(
        ...     MemoryAutoencoder(channels=(8, 16), granularity=(2, 1), num_items=4),
        ...     Discriminator(channels=(8, 16)),
        ...     AnomalyMapGenerator(normalization="global", sigma=1.0),
        ... )
        >>> collector = NormalStatisticsCollector(model)
        >>> collector.add(torch.rand(4, 3, 32, 32))
        >>> collector.finish()
        4
        >>> model.anomaly_map.normal_mean.shape
        torch.Size([1, 1, 1, 1])

    """

    def __init__(self, model: DivideAssembleModel) -> None:
        self.model = model
        self.size: tuple[int, int] | None = None
        self.device = torch.device("cpu")
        self.reset()

    def reset(self) -> None:
        """Start a new epoch's statistics."""
        self.statistics = {"normal": NormalStatistics(), "latent": NormalStatistics()}
        self.images: list[torch.Tensor] = []  # kept for the "auto" measure choice
        self.choice: MapChoice | None = None

    @torch.no_grad()
    def add(self, images: torch.Tensor) -> None:
        """Measure held-out normal images ``(B, C, H, W)`` with the current weights (eval mode)."""
        self.size = (int(images.shape[-2]), int(images.shape[-1]))
        self.device = images.device
        if images.shape[0] == 0:
            return
        if self.model.anomaly_map.chooses:
            room = KEPT_IMAGES - sum(len(kept) for kept in self.images)
            self.images.extend([images[:room].detach().cpu()] if room > 0 else [])
        training = self.model.training
        self.model.eval()
        try:
            reconstructions = self.model.autoencoder(images).image
            anomaly_map = self.model.anomaly_map
            self.statistics["normal"].update(anomaly_map.reconstruction_error(images, reconstructions))
            _, latent = self.model.discriminator(images)
            _, latent_reconstructed = self.model.discriminator(reconstructions)
            self.statistics["latent"].update(anomaly_map.latent_error(latent, latent_reconstructed, images.shape[-2:]))
        finally:
            self.model.train(training)

    @torch.no_grad()
    def _choose_map(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None) -> MapChoice:
        """Judge every candidate map on the kept held-out images (summed over processes) and pick the best."""
        generator = self.model.anomaly_map
        candidates = map_candidates(generator.measure, generator.normalization)
        kept = torch.cat(self.images) if self.images else torch.zeros(0)
        training = self.model.training
        self.model.eval()
        try:
            if len(kept) >= 4:
                reconstruct = lambda images: self.model.autoencoder(images).image  # noqa: E731
                criteria = candidate_criteria(generator, reconstruct, kept.to(self.device), candidates)
            else:  # too few here: this process does not vote
                criteria = torch.zeros(len(candidates))
        finally:
            self.model.train(training)
        if reduce is not None:
            criteria = reduce(criteria.to(self.device)).cpu()
        return MapChoice(candidates, criteria)

    def finish(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> int:
        """Store the statistics in the anomaly map's buffers and start anew.

        Args:
            reduce: Sums a tensor over processes (``trainer.strategy.reduce(..., reduce_op="sum")``);
                ``None`` in one process.

        Returns:
            The number of held-out images the statistics come from (0: nothing was stored).

        """
        if self.size is None:
            return 0
        generator = self.model.anomaly_map
        count = 0
        for name, statistics in self.statistics.items():
            shape = (len(generator.measures) if name == "normal" else 1, *self.size)
            totals = statistics.totals(shape).to(self.device)
            if reduce is not None:
                totals = reduce(totals)
            statistics.load_totals(totals, shape)
            count = len(statistics)
        choice = self._choose_map(reduce) if count >= 2 and generator.chooses else None
        if choice is not None:
            generator.set_measure_weights(torch.tensor(choice.best.weights))
        normalization = choice.best.normalization if choice is not None else generator.normalization
        if count >= 2 and normalization is not Normalization.NONE:
            for name, statistics in self.statistics.items():
                generator.set_statistics(name, *statistics.result(normalization))
        self.reset()
        self.choice = choice
        self.size = None
        return count if count >= 2 else 0
