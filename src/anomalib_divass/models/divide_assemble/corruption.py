"""Corrupted training inputs: the network learns to rebuild the clean image, not to copy a defect.

A reconstruction model trained on normal images alone may learn to copy whatever it is shown, an
anomaly included. Trained to rebuild the *clean* image from a corrupted copy, it learns to replace
what does not belong. Only the input is corrupted; the target and the discriminator's real images
stay clean. Nothing changes at inference.

* ``"perlin"``: anomalib's ``PerlinAnomalyGenerator`` (Perlin-noise blotches of a colour-augmented copy
  of the image; no texture folder, offline), on half of the images.
* ``"cutpaste"``: a rectangle of another image of the batch (or of the image itself, elsewhere) pasted
  at a random place, on half of the images: a piece of normal texture in the wrong place.

Example:
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> images = torch.rand(4, 3, 32, 32)
    >>> corrupted = InputCorruption("cutpaste")(images)
    >>> corrupted.shape, bool(torch.equal(images, images.clone()))
    (torch.Size([4, 3, 32, 32]), True)

"""

from __future__ import annotations

from enum import Enum

import torch
from anomalib.data.utils.generators import PerlinAnomalyGenerator
from torch import nn

__all__ = ["Corruption", "InputCorruption"]


class Corruption(str, Enum):
    """How training inputs are corrupted."""

    NONE = "none"
    PERLIN = "perlin"
    CUTPASTE = "cutpaste"


class InputCorruption(nn.Module):
    """Corrupt a batch of training images; the input tensor is never modified.

    Args:
        kind: See :class:`Corruption`.
        probability: Fraction of the images corrupted.

    """

    def __init__(self, kind: Corruption | str = Corruption.NONE, probability: float = 0.5) -> None:
        super().__init__()
        self.kind = Corruption(kind)
        self.probability = probability
        self.perlin = (
            PerlinAnomalyGenerator(probability=probability, blend_factor=(0.2, 1.0))
            if self.kind is Corruption.PERLIN
            else None
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return corrupted copies of ``images`` ``(B, C, H, W)`` in ``[0, 1]``.

        Args:
            images: Clean images ``(B, C, H, W)``.

        Returns:
            Corrupted images ``(B, C, H, W)``; ``images`` itself when ``kind`` is ``"none"``.

        """
        if self.kind is Corruption.NONE:
            return images
        if self.kind is Corruption.PERLIN:
            grey = bool((images.amax(dim=1) - images.amin(dim=1)).amax() == 0)
            corrupted, _ = self.perlin(
                images.detach().mean(dim=1, keepdim=True).expand(-1, 3, -1, -1).clone() if grey else images.detach()
            )  # type: ignore[misc]
            if grey:  # the generator colours its noise: keep grey images grey
                corrupted = corrupted.mean(dim=1, keepdim=True).expand_as(images)
            return corrupted.to(images).clamp(0, 1)
        return self._cut_paste(images.detach())

    def _cut_paste(self, images: torch.Tensor) -> torch.Tensor:
        """Paste a rectangle (1/16 to 1/4 of each side) of a random batch image at a random place."""
        corrupted = images.clone()
        batch, _, height, width = images.shape
        chosen = torch.rand(batch) < self.probability
        for index in torch.nonzero(chosen).flatten().tolist():
            h = int(torch.randint(max(1, height // 16), max(2, height // 4), ()))
            w = int(torch.randint(max(1, width // 16), max(2, width // 4), ()))
            top, left = int(torch.randint(0, height - h + 1, ())), int(torch.randint(0, width - w + 1, ()))
            source_top = int(torch.randint(0, height - h + 1, ()))
            source_left = int(torch.randint(0, width - w + 1, ()))
            source = int(torch.randint(0, batch, ()))
            corrupted[index, :, top : top + h, left : left + w] = images[
                source, :, source_top : source_top + h, source_left : source_left + w
            ]
        return corrupted
