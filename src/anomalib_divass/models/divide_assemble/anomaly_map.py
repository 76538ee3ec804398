"""Anomaly map of Divide-and-Assemble: reconstruction error plus discriminator latent error.

The map is the per-pixel squared reconstruction error, averaged over channels. DAAD+ adds
the squared distance between the discriminator's latent features of the image and of its
reconstruction, upsampled to the image, with weight ``latent_weight``. The sum is smoothed
with a Gaussian; the image score is the mean of its highest ``top_fraction`` of pixels
(1.0: the mean of the map, a single pixel: its maximum).

Example:
    >>> import torch
    >>> generator = AnomalyMapGenerator(sigma=4.0)
    >>> images = torch.rand(2, 3, 64, 64)
    >>> anomaly_map = generator(images, images.flip(-1))
    >>> anomaly_map.shape
    torch.Size([2, 1, 64, 64])

"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["AnomalyMapGenerator", "SeparableGaussianBlur"]


class SeparableGaussianBlur(nn.Module):
    """Gaussian smoothing of one-channel maps as two matrix products, ``G_h @ map @ G_w^T``.

    A Gaussian filter is separable; written as banded matrices (reflect padding folded in)
    it runs as two matrix multiplications, about ten times faster on a CPU than a 2-D
    convolution with a one-channel ``33 x 33`` kernel, and it exports as plain ``MatMul``.
    The matrices depend only on the map size and are built once per size.

    Args:
        sigma: Standard deviation in pixels.

    Example:
        >>> blur = SeparableGaussianBlur(sigma=2.0)
        >>> blur(torch.ones(1, 1, 16, 16)).allclose(torch.ones(1, 1, 16, 16))
        True

    """

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma
        self.radius = int(4.0 * sigma + 0.5)
        self._matrices: dict[int, torch.Tensor] = {}

    def matrix(self, size: int) -> torch.Tensor:
        """Blur matrix ``(size, size)`` whose row ``i`` holds the taps of output ``i``.

        Built outside ``torch.inference_mode`` even when first asked for inside it (``Engine.test`` and
        ``predict`` run there): a cached inference tensor would break a later export in the same process.
        """
        if size not in self._matrices:
            if size <= self.radius:
                msg = f"A {size}-pixel side is too small for Gaussian smoothing with sigma {self.sigma}."
                raise ValueError(msg)
            with torch.inference_mode(False):
                taps = torch.arange(-self.radius, self.radius + 1)
                weights = torch.exp(-0.5 * (taps / self.sigma) ** 2)
                columns = torch.arange(size)[:, None] + taps[None, :]
                columns = columns.abs()  # reflect at the start
                columns = torch.where(columns > size - 1, 2 * (size - 1) - columns, columns)  # and at the end
                weights = (weights / weights.sum()).expand(size, -1)
                self._matrices[size] = torch.zeros(size, size).scatter_add_(1, columns, weights)
        return self._matrices[size]

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Smooth maps ``(B, 1, H, W)``; returns the same shape."""
        rows = self.matrix(maps.shape[-2]).to(maps)
        columns = self.matrix(maps.shape[-1]).to(maps)
        return rows @ maps @ columns.t()


class AnomalyMapGenerator(nn.Module):
    """Build the anomaly map and the image score.

    Args:
        latent_weight: Weight of the discriminator-feature error (0 gives DAAD, > 0 DAAD+).
        sigma: Standard deviation of the Gaussian smoothing, in pixels; 0 disables it.
        top_fraction: Fraction of the highest map pixels averaged into the image score.

    Example:
        >>> generator = AnomalyMapGenerator()
        >>> generator.score(torch.zeros(3, 1, 8, 8)).shape
        torch.Size([3])

    """

    def __init__(self, latent_weight: float = 0.0, sigma: float = 4.0, top_fraction: float = 0.01) -> None:
        super().__init__()
        if not 0.0 < top_fraction <= 1.0:
            msg = f"top_fraction must lie in (0, 1], got {top_fraction}."
            raise ValueError(msg)
        self.latent_weight = latent_weight
        self.top_fraction = top_fraction
        self.blur: nn.Module = SeparableGaussianBlur(sigma) if sigma > 0 else nn.Identity()

    def forward(
        self,
        images: torch.Tensor,
        reconstructions: torch.Tensor,
        latent: torch.Tensor | None = None,
        latent_reconstructed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the anomaly map at the image resolution.

        Args:
            images: Pre-processed images ``(B, C, H, W)``.
            reconstructions: Their reconstructions ``(B, C, H, W)``.
            latent: Discriminator features of the images ``(B, D, h, w)``; needed when
                ``latent_weight > 0``.
            latent_reconstructed: Discriminator features of the reconstructions ``(B, D, h, w)``.

        Returns:
            Smoothed anomaly map ``(B, 1, H, W)``.

        """
        anomaly_map = (images - reconstructions).pow(2).mean(dim=1, keepdim=True)
        if self.latent_weight > 0:
            if latent is None or latent_reconstructed is None:
                msg = "latent_weight > 0 needs the discriminator features of images and reconstructions."
                raise ValueError(msg)
            latent_error = (latent - latent_reconstructed).pow(2).mean(dim=1, keepdim=True)
            latent_error = F.interpolate(latent_error, size=images.shape[-2:], mode="bilinear", align_corners=False)
            anomaly_map = anomaly_map + self.latent_weight * latent_error
        return self.blur(anomaly_map)

    def score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Image score: the mean of the highest ``top_fraction`` of the map's pixels.

        Averaging the top of the map is steadier than its maximum (one noisy pixel) and, unlike
        the plain mean, is not diluted by a large normal area around a small defect.

        Args:
            anomaly_map: Anomaly maps ``(B, 1, H, W)``.

        Returns:
            Scores ``(B,)``.
        """
        pixels = anomaly_map.flatten(1)
        count = max(1, int(pixels.shape[1] * self.top_fraction))
        return pixels.topk(count, dim=1).values.mean(dim=1)
