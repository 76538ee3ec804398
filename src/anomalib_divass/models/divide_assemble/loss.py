"""Losses of Divide-and-Assemble: generator (adversarial, reconstruction, latent, entropy), discriminator, segmenter.

Example:
    >>> import torch
    >>> loss = GeneratorLoss()
    >>> images = torch.rand(2, 3, 8, 8)
    >>> terms = loss(images, images, torch.tensor(0.5), torch.zeros(2), torch.ones(2, 4), torch.ones(2, 4))
    >>> float(terms.reconstruction), float(terms.latent)
    (0.0, 0.0)

"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torchvision.ops import sigmoid_focal_loss

__all__ = ["DiscriminatorLoss", "GeneratorLoss", "GeneratorLossTerms", "SegmentationLoss"]


class GeneratorLossTerms(NamedTuple):
    """The weighted generator loss and its unweighted terms (for logging).

    Attributes:
        total: Weighted sum, the scalar to back-propagate.
        adversarial: BCE of the discriminator's logit on reconstructions against "real".
        reconstruction: Mean absolute error between images and reconstructions.
        latent: Mean squared error between discriminator features of images and reconstructions.
        entropy: Mean entropy of the memory addressing weights.

    """

    total: torch.Tensor
    adversarial: torch.Tensor
    reconstruction: torch.Tensor
    latent: torch.Tensor
    entropy: torch.Tensor


class GeneratorLoss(nn.Module):
    """``w_adv * adv + w_rec * |x - x_hat| + w_lat * ||f(x) - f(x_hat)||^2 + w_ent * entropy``.

    Args:
        adversarial_weight: Weight of the adversarial term.
        reconstruction_weight: Weight of the L1 reconstruction term.
        alignment_weight: Weight of the discriminator-feature (latent) term.
        entropy_weight: Weight of the memory addressing entropy (MemAE).

    Example:
        >>> GeneratorLoss(entropy_weight=1.0)(
        ...     torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), torch.tensor(2.0),
        ...     torch.zeros(1), torch.zeros(1, 2), torch.zeros(1, 2)).total.item() > 2.0
        True

    """

    def __init__(
        self,
        adversarial_weight: float = 1.0,
        reconstruction_weight: float = 50.0,
        alignment_weight: float = 1.0,
        entropy_weight: float = 0.0002,
    ) -> None:
        super().__init__()
        self.adversarial_weight = adversarial_weight
        self.reconstruction_weight = reconstruction_weight
        self.alignment_weight = alignment_weight
        self.entropy_weight = entropy_weight

    def forward(
        self,
        images: torch.Tensor,
        reconstructions: torch.Tensor,
        entropy: torch.Tensor,
        fake_logits: torch.Tensor,
        real_features: torch.Tensor,
        fake_features: torch.Tensor,
    ) -> GeneratorLossTerms:
        """Compute the generator loss.

        Args:
            images: Input images ``(B, C, H, W)``.
            reconstructions: Reconstructions ``(B, C, H, W)``.
            entropy: Mean memory addressing entropy, a scalar.
            fake_logits: Discriminator logits of the reconstructions ``(B,)``.
            real_features: Discriminator features of the images ``(B, D, h, w)`` (detached here).
            fake_features: Discriminator features of the reconstructions ``(B, D, h, w)``.

        Returns:
            :class:`GeneratorLossTerms`.

        """
        adversarial = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        reconstruction = F.l1_loss(reconstructions, images)
        latent = F.mse_loss(fake_features, real_features.detach())
        total = (
            self.adversarial_weight * adversarial
            + self.reconstruction_weight * reconstruction
            + self.alignment_weight * latent
            + self.entropy_weight * entropy
        )
        return GeneratorLossTerms(total, adversarial, reconstruction, latent, entropy)


class DiscriminatorLoss(nn.Module):
    """``(BCE(D(x), real) + BCE(D(x_hat), fake)) / 2``.

    Example:
        >>> float(DiscriminatorLoss()(torch.full((4,), 20.0), torch.full((4,), -20.0))) < 1e-6
        True

    """

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Compute the discriminator loss.

        Args:
            real_logits: Logits of real images ``(B,)``.
            fake_logits: Logits of detached reconstructions ``(B,)``.

        Returns:
            Scalar loss.

        """
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return 0.5 * (real + fake)


class SegmentationLoss(nn.Module):
    """Focal loss of the defect segmenter (as DRAEM's): defect pixels are few, easy normal pixels count little.

    Args:
        gamma: Focusing exponent; 0 gives plain binary cross-entropy.

    Example:
        >>> masks = torch.zeros(2, 1, 8, 8)
        >>> float(SegmentationLoss()(torch.full((2, 1, 8, 8), -20.0), masks)) < 1e-6
        True

    """

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Compute the mean focal loss.

        Args:
            logits: Defect logits ``(B, 1, H, W)``.
            masks: Defect masks ``(B, 1, H, W)``, 0 or 1.

        Returns:
            Scalar loss.

        """
        return sigmoid_focal_loss(logits, masks, alpha=-1, gamma=self.gamma, reduction="mean")
