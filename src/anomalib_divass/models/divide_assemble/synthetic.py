"""Synthetic defects on normal images, for choices made without anomaly labels.

The anomaly map (and the granularity) are chosen per product from normal images only: defects are
pasted on held-out normal images and each candidate is judged by how well its map finds them. Perlin
blotches alone are a poor proxy (they favour a plain squared error on bottles, where real broken glass
favours structural measures), so four kinds are mixed, each with its mask:

* ``"perlin"``: anomalib's Perlin-noise blotches of a colour-augmented copy (stains, discolouration);
* ``"cutpaste"``: a rectangle of another normal image pasted elsewhere (misplaced structure);
* ``"scratch"``: thin dark or bright polylines of 1-3 pixels (scratches, cracks);
* ``"hole"``: an ellipse filled with a flat dark or bright value (missing pieces, holes, chips).

Example:
    >>> images = torch.rand(8, 3, 64, 64)
    >>> defective, masks = synthetic_defects(images, seed=0)
    >>> defective.shape, masks.shape, bool((masks.flatten(1).sum(1) > 0).all())
    (torch.Size([8, 3, 64, 64]), torch.Size([8, 1, 64, 64]), True)

"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from anomalib.data.utils.generators import PerlinAnomalyGenerator

from .corruption import cut_paste

__all__ = ["DEFECT_KINDS", "defects_on_some", "synthetic_defects"]

DEFECT_KINDS = ("perlin", "cutpaste", "scratch", "hole")


def _grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    columns = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    return rows, columns


def _scratch_mask(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A random polyline of 2-4 segments, 1-3 pixels wide (at 256 px), as a mask ``(H, W)``."""
    rows, columns = _grid(height, width)
    scale = max(height, width) / 256
    half_width = (0.5 + 1.0 * float(torch.rand((), generator=generator))) * max(scale, 0.5)
    point = torch.rand(2, generator=generator) * torch.tensor([height, width], dtype=torch.float32)
    heading = float(torch.rand((), generator=generator)) * 2 * math.pi
    mask = torch.zeros(height, width, dtype=torch.bool)
    for _ in range(int(torch.randint(2, 5, (), generator=generator))):
        heading += float(torch.randn((), generator=generator)) * 0.5
        length = (0.1 + 0.2 * float(torch.rand((), generator=generator))) * max(height, width)
        end = point + length * torch.tensor([math.sin(heading), math.cos(heading)])
        direction = end - point
        t = ((rows - point[0]) * direction[0] + (columns - point[1]) * direction[1]) / direction.pow(2).sum()
        t = t.clamp(0, 1)
        distance = ((rows - point[0] - t * direction[0]) ** 2 + (columns - point[1] - t * direction[1]) ** 2).sqrt()
        mask |= distance <= half_width
        point = end
    return mask


def _hole_mask(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A random rotated ellipse of 3-12 % of the image side, as a mask ``(H, W)``."""
    rows, columns = _grid(height, width)
    centre = torch.rand(2, generator=generator) * torch.tensor([height, width], dtype=torch.float32)
    axes = (0.03 + 0.09 * torch.rand(2, generator=generator)) * max(height, width)
    angle = float(torch.rand((), generator=generator)) * math.pi
    dy, dx = rows - centre[0], columns - centre[1]
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    return (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1


def _cutpaste(images: torch.Tensor, index: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    image, (top, left, h, w) = cut_paste(images, index, smallest=12, floor=2, generator=generator)
    mask = torch.zeros(images.shape[-2:], dtype=torch.bool)
    mask[top : top + h, left : left + w] = (image != images[index])[:, top : top + h, left : left + w].any(0)
    return image, mask


def synthetic_defects(
    images: torch.Tensor,
    seed: int = 0,
    kinds: Sequence[str] = DEFECT_KINDS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste one synthetic defect on every image; kinds are assigned in turn (image ``i`` gets ``kinds[i % n]``).

    Args:
        images: Normal images ``(B, C, H, W)`` in ``[0, 1]``.
        seed: Seed of every random choice: the same seed gives the same defects.
        kinds: Defect kinds, from :data:`DEFECT_KINDS`.

    Returns:
        Defective images ``(B, C, H, W)`` and their masks ``(B, 1, H, W)`` (0 or 1, never empty).

    Raises:
        ValueError: For an unknown defect kind.

    """
    unknown = set(kinds) - set(DEFECT_KINDS)
    if unknown or not kinds:
        msg = f"Unknown synthetic defect kinds {sorted(unknown)}: choose from {list(DEFECT_KINDS)}."
        raise ValueError(msg)
    generator = torch.Generator().manual_seed(seed)
    images = images.detach().cpu()
    batch, channels, height, width = images.shape
    defective = images.clone()
    masks = torch.zeros(batch, 1, height, width)
    perlin = PerlinAnomalyGenerator(probability=1.0, blend_factor=(0.5, 1.0)) if "perlin" in kinds else None
    for index in range(batch):
        kind = kinds[index % len(kinds)]
        image = images[index]
        for _ in range(10):  # a defect that changes no pixel (e.g. pasted onto its own copy) is drawn again
            if kind == "perlin":
                state = torch.random.get_rng_state()
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=generator)))
                try:
                    colour = image if channels == 3 else image.mean(0, keepdim=True).expand(3, -1, -1)
                    result, mask = perlin(colour.clone())  # type: ignore[misc]
                finally:
                    torch.random.set_rng_state(state)
                result = result if channels == 3 else result.mean(0, keepdim=True).expand(channels, -1, -1)
                mask = mask[0] > 0
            elif kind == "cutpaste":
                result, mask = _cutpaste(images, index, generator)
            else:
                mask = (_scratch_mask if kind == "scratch" else _hole_mask)(height, width, generator)
                bright = bool(torch.rand((), generator=generator) < 0.5)
                level = image.mean() + (0.35 if bright else -0.35)
                result = torch.where(mask, level.clamp(0.05, 0.95), image)
            if mask.any():
                break
        defective[index] = result.clamp(0, 1)
        masks[index, 0] = mask.float()
    return defective, masks


def defects_on_some(images: torch.Tensor, probability: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic defects on a random share of a training batch, drawn from torch's global random state.

    Args:
        images: Normal images ``(B, C, H, W)`` in ``[0, 1]``; never modified.
        probability: Chance of each image to receive a defect.

    Returns:
        Images ``(B, C, H, W)`` (the chosen ones defective, the others ``images``' own) and their defect masks
        ``(B, 1, H, W)`` (zero for the images left normal), on ``images``' device.

    Example:
        >>> defective, masks = defects_on_some(torch.rand(4, 3, 32, 32), probability=1.0)
        >>> bool((masks.flatten(1).amax(1) == 1).all())
        True

    """
    chosen = torch.nonzero(torch.rand(images.shape[0]) < probability).flatten().to(images.device)
    masks = torch.zeros(images.shape[0], 1, *images.shape[-2:], device=images.device, dtype=images.dtype)
    if len(chosen) == 0:
        return images, masks
    defective, chosen_masks = synthetic_defects(images[chosen], seed=int(torch.randint(0, 2**31 - 1, ())))
    result = images.clone()
    result[chosen] = defective.to(images)
    masks[chosen] = chosen_masks.to(masks)
    return result, masks
