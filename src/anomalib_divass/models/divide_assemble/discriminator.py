"""The adversarial discriminator of DAAD and its semantic latent features (DAAD+).

A DCGAN-style CNN: stride-2 4 x 4 convolutions with batch norm and leaky ReLU. It returns a
realness logit per image and the feature map of its last block; the distance between the
features of an image and of its reconstruction is the latent error of DAAD+.

Example:
    >>> import torch
    >>> discriminator = Discriminator(channels=(8, 16))
    >>> logit, features = discriminator(torch.rand(2, 3, 64, 64))
    >>> logit.shape, features.shape
    (torch.Size([2]), torch.Size([2, 16, 16, 16]))

"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Discriminator"]


class Discriminator(nn.Module):
    """Patch discriminator with a latent feature output.

    Args:
        in_channels: Channels of the images it judges.
        channels: Output channels of each stride-2 block; the last block's output is the
            latent feature map at ``1 / 2**len(channels)`` of the image size.

    Example:
        >>> Discriminator(channels=(8, 16, 32))(torch.rand(1, 3, 64, 64))[1].shape
        torch.Size([1, 32, 8, 8])

    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for index, width in enumerate(channels):
            layers.append(nn.Conv2d(previous, width, kernel_size=4, stride=2, padding=1, bias=index == 0))
            if index > 0:  # DCGAN: no batch norm on the first block
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            previous = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(previous, 1, kernel_size=3, padding=1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Judge images.

        Args:
            images: Images ``(B, C, H, W)``.

        Returns:
            The realness logit ``(B,)`` (mean of the patch logits) and the latent feature map
            ``(B, C_last, H / 2**L, W / 2**L)``.

        """
        features = self.features(images)
        logit = self.classifier(features).mean(dim=(1, 2, 3))
        return logit, features
