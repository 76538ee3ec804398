"""Defect segmentation: a small U-Net that reads an image beside its reconstruction and marks defects.

A reconstruction error says where the image and its rebuild differ, not whether the difference is a
defect: textures that never rebuild exactly (streaks, grain, the rim of a bottle) carry as much error as
real defects. DRAEM (Zavrtanik et al., ICCV 2021) adds a *discriminative* network that reads the image
and its reconstruction side by side and is trained, on normal images with synthetic defects pasted in
(:mod:`.synthetic`), to segment the defects: it learns which disagreements matter. The reconstruction
network is trained at the same time to rebuild the clean image from the defective one, so the pair it
sees at inference is the one it was trained on. Here the reconstruction comes from the block memories.

Example:
    >>> segmenter = DefectSegmenter(in_channels=3, width=8, stride=2)
    >>> images, reconstructions = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    >>> segmenter(images, reconstructions).shape
    torch.Size([2, 1, 32, 32])

"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

__all__ = ["DefectSegmenter"]


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3 x 3 convolutions with batch norm and ReLU, the U-Net's unit."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DefectSegmenter(nn.Module):
    """U-Net on ``cat(image, reconstruction)`` giving defect logits per pixel.

    Args:
        in_channels: Image channels ``C`` (the network reads ``2 C``).
        width: Channels of the first level; each deeper level doubles them.
        depth: Levels, each halving the resolution after the first.
        stride: The first level works at ``1 / stride`` of the image resolution (a strided first convolution
            reads every pixel; the logits are interpolated back): 2 makes the network four times cheaper.

    Example:
        >>> DefectSegmenter(in_channels=1, width=4, depth=2)(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)).shape
        torch.Size([1, 1, 16, 16])

    """

    def __init__(self, in_channels: int = 3, width: int = 16, depth: int = 3, stride: int = 2) -> None:
        super().__init__()
        if depth < 1 or width < 1 or stride < 1:
            msg = f"DefectSegmenter needs depth, width and stride >= 1, got {depth}, {width} and {stride}."
            raise ValueError(msg)
        widths = [width * 2**level for level in range(depth)]
        self.stem = nn.Sequential(
            nn.Conv2d(2 * in_channels, width, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.down = nn.ModuleList(_double_conv(widths[max(level - 1, 0)], widths[level]) for level in range(depth))
        self.up = nn.ModuleList(
            _double_conv(widths[level + 1] + widths[level], widths[level]) for level in reversed(range(depth - 1))
        )
        self.head = nn.Conv2d(width, 1, kernel_size=1)

    def forward(self, images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        """Segment defects.

        Args:
            images: Images ``(B, C, H, W)``.
            reconstructions: Their reconstructions ``(B, C, H, W)``.

        Returns:
            Defect logits ``(B, 1, H, W)`` (sigmoid: the probability of a defect).

        """
        features = self.stem(torch.cat([images, reconstructions], dim=1))
        skips = []
        for level, layer in enumerate(self.down):
            features = layer(features if level == 0 else F.max_pool2d(features, 2))
            skips.append(features)
        for layer, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            features = F.interpolate(features, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            features = layer(torch.cat([features, skip], dim=1))
        logits = self.head(features)
        if logits.shape[-2:] != images.shape[-2:]:
            logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits
