"""Synthetic defects on held-out normal training images: the labels the automatic choice may use.

The automatic choice of granularity never sees a real defect. It holds out part of the normal
training images, pastes anomalib's Perlin-noise anomalies (``PerlinAnomalyGenerator``, as in
DRAEM) onto copies of them, and asks which setting separates the clean copies from the defective
ones best. The held-out images are not used for training.

Example:
    >>> import torch
    >>> images = torch.rand(4, 3, 64, 64)
    >>> defective, masks = synthetic_defects(images, seed=0)
    >>> defective.shape, masks.shape
    (torch.Size([4, 3, 64, 64]), torch.Size([4, 1, 64, 64]))

"""

from __future__ import annotations

import torch
from anomalib.data.utils.generators import PerlinAnomalyGenerator

__all__ = ["DEFAULT_HOLDOUT", "holdout_split", "synthetic_defects"]

DEFAULT_HOLDOUT = 0.2  # fraction of the normal training images held out for the synthetic defects


def holdout_split(count: int, fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split ``count`` training images into a training part and a held-out part.

    Args:
        count: Number of normal training images.
        fraction: Fraction held out, in ``(0, 1)``.
        seed: Seed of the random permutation.

    Returns:
        ``(train_indices, heldout_indices)``, both sorted; at least one image in each.

    Raises:
        ValueError: If the fraction or the number of images leaves either part empty.

    Example:
        >>> holdout_split(10, 0.2)
        ([0, 2, 3, 5, 6, 7, 8, 9], [1, 4])

    """
    heldout = round(count * fraction)
    if not 0 < fraction < 1 or heldout < 1 or heldout >= count:
        msg = (
            f"Holding out {fraction:.0%} of {count} training images leaves no images to "
            f"{'hold out' if heldout < 1 else 'train on'}: use a fraction in (0, 1) and at least 2 training images."
        )
        raise ValueError(msg)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[heldout:]), sorted(order[:heldout])


def synthetic_defects(
    images: torch.Tensor,
    seed: int = 0,
    blend_factor: tuple[float, float] = (0.5, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste one Perlin-noise anomaly onto every image (anomalib's ``PerlinAnomalyGenerator``).

    Outside its mask an image is unchanged; inside, it is blended with a colour-augmented noise
    texture. The same seed gives the same defects, so every setting is judged on the same set.

    Args:
        images: Normal images ``(B, C, H, W)`` in ``[0, 1]``; one-channel images are repeated to three.
        seed: Seed of the noise, the blending and the augmentations.
        blend_factor: Range of the blending weight of the texture inside the mask.

    Returns:
        Defective images ``(B, 3, H, W)`` and their masks ``(B, 1, H, W)`` (0 or 1, never empty).

    """
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    generator = PerlinAnomalyGenerator(probability=1.0, blend_factor=blend_factor)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        defective, masks = [], []
        for image in images:
            image_defective, mask = generator(image)
            while not mask.any():  # the generator gives up after 10 empty masks; never return a clean "defect"
                image_defective, mask = generator(image)
            defective.append(image_defective)
            masks.append(mask)
    finally:
        torch.random.set_rng_state(state)
    return torch.stack(defective).clamp(0, 1), (torch.stack(masks) > 0).float()
