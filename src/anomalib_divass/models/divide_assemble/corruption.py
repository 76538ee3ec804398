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

__all__ = ["Corruption", "InputCorruption", "cut_paste"]


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
        chosen = torch.rand(images.shape[0]) < self.probability
        for index in torch.nonzero(chosen).flatten().tolist():
            corrupted[index], _ = cut_paste(images, index, smallest=16, floor=1)
        return corrupted


def cut_paste(
    images: torch.Tensor, index: int, smallest: int, floor: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Image ``index`` of a batch with a rectangle of a random batch image pasted at a random place.

    Args:
        images: Images ``(B, C, H, W)``.
        index: Which image receives the rectangle.
        smallest: The rectangle's sides range from ``1 / smallest`` to ``1 / 4`` of the image's.
        floor: The smallest side in pixels (for tiny images).
        generator: Random generator (``None``: torch's global one).

    Returns:
        The new image ``(C, H, W)`` and the rectangle ``(top, left, height, width)``.

    """
    _, _, height, width = images.shape
    h = int(torch.randint(max(floor, height // smallest), max(floor + 1, height // 4), (), generator=generator))
    w = int(torch.randint(max(floor, width // smallest), max(floor + 1, width // 4), (), generator=generator))
    top = int(torch.randint(0, height - h + 1, (), generator=generator))
    left = int(torch.randint(0, width - w + 1, (), generator=generator))
    source_top = int(torch.randint(0, height - h + 1, (), generator=generator))
    source_left = int(torch.randint(0, width - w + 1, (), generator=generator))
    source = int(torch.randint(0, images.shape[0], (), generator=generator))
    image = images[index].clone()
    image[:, top : top + h, left : left + w] = images[
        source, :, source_top : source_top + h, source_left : source_left + w
    ]
    return image, (top, left, h, w)
