"""The Divide-and-Assemble network: an encoder-decoder whose every skip reads a block memory.

The encoder halves the resolution ``S`` times. The feature map of every scale, the
bottleneck included, is divided into blocks, each block is replaced by its read from a
:class:`~anomalib_divass.memory.BlockMemory` of normal blocks, and the decoder rebuilds the
image from these reads alone: no raw encoder feature reaches it (an identity shortcut would
let anomalies through). ``granularity`` gives the block side per scale, finest scale first.
With ``use_memory=False`` the same network is the vanilla autoencoder the paper compares with.

Example:
    >>> import torch
    >>> autoencoder = MemoryAutoencoder(channels=(8, 16), granularity=(2, 1), num_items=10)
    >>> model = DivideAssembleModel(autoencoder, Discriminator(channels=(8, 16)))
    >>> model.eval()(torch.rand(2, 3, 32, 32)).anomaly_map.shape
    torch.Size([2, 1, 32, 32])

"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from anomalib.data import InferenceBatch
from torch import nn

from .anomaly_map import AnomalyMapGenerator
from .discriminator import Discriminator
from .memory import BlockMemory, Similarity
from .segmentation import DefectSegmenter

__all__ = ["DivideAssembleModel", "MemoryAutoencoder", "Reconstruction", "check_input_size", "input_size_multiple"]


class Reconstruction(NamedTuple):
    """Training output of the autoencoder.

    Attributes:
        image: Reconstructed images ``(B, C, H, W)`` in ``[0, 1]``.
        entropy: Mean addressing entropy over all memories, a scalar (0 without memory).

    """

    image: torch.Tensor
    entropy: torch.Tensor


def input_size_multiple(granularity: Sequence[int]) -> int:
    """Smallest side that every scale's block size divides.

    Scale ``i`` (0 = finest) has cells of ``2**(i+1)`` pixels, so its ``k``-blocks tile an image
    whose side is a multiple of ``2**(i+1) * k``; all are powers of two times ``k``.

    Args:
        granularity: Block side per scale, finest first.

    Returns:
        The side every input height and width must be a multiple of.

    Example:
        >>> input_size_multiple((32, 16, 8, 4, 2))
        64

    """
    multiple = 1
    for scale, block_size in enumerate(granularity):
        step = 2 ** (scale + 1) * block_size
        multiple = multiple * step // _gcd(multiple, step)
    return multiple


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def check_input_size(input_size: Sequence[int], granularity: Sequence[int]) -> None:
    """Raise a clear error if an input size does not fit the strides and block sizes.

    Args:
        input_size: ``(height, width)`` after pre-processing.
        granularity: Block side per scale, finest first.

    Raises:
        ValueError: Naming the sizes that work.

    Example:
        >>> check_input_size((256, 256), (32, 16, 8, 4, 2))

    """
    multiple = input_size_multiple(granularity)
    height, width = (int(side) for side in input_size)
    if height % multiple == 0 and width % multiple == 0 and height > 0 and width > 0:
        return
    nearest = sorted({max(multiple, round(side / multiple) * multiple) for side in (height, width)})
    msg = (
        f"Input size {height} x {width} does not fit granularity {tuple(granularity)}: with "
        f"{len(granularity)} stride-2 stages every side must be a multiple of {multiple}. "
        f"Use for example {' or '.join(str(side) for side in nearest)} (the model's image_size / "
        f"the pre-processor's Resize), or choose block sizes that divide the feature maps."
    )
    raise ValueError(msg)


def _conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3 x 3 convolution, batch norm, leaky ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2, inplace=True),
    )


class MemoryAutoencoder(nn.Module):
    """U-Net-like autoencoder with a block memory on every skip and on the bottleneck.

    Args:
        in_channels: Image channels.
        channels: Encoder channels per scale, finest first; one stride-2 stage each.
        granularity: Block side per scale, finest first (same length as ``channels``).
        num_items: Memory items per scale.
        similarity: Memory addressing, ``"cosine"`` or ``"dot"``.
        shrink_threshold: Hard-shrinkage threshold of the memories.
        temperature: Softmax temperature of cosine addressing.
        use_memory: ``False`` builds the autoencoders without memory (skips pass features unchanged).
        skips: ``False`` drops the skip connections: the decoder rebuilds the image from the
            bottleneck alone (the paper's AE, and MemAE with a memory there).

    Example:
        >>> autoencoder = MemoryAutoencoder(channels=(8, 16), granularity=(2, 1), num_items=4)
        >>> autoencoder(torch.rand(1, 3, 16, 16)).image.shape
        torch.Size([1, 3, 16, 16])

    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        granularity: Sequence[int] = (32, 16, 8, 4, 2),
        num_items: int = 100,
        similarity: Similarity | str = Similarity.COSINE,
        shrink_threshold: float = 0.0025,
        temperature: float = 0.05,
        use_memory: bool = True,
        skips: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        if len(channels) != len(granularity):
            msg = (
                f"granularity {tuple(granularity)} gives {len(granularity)} block sizes but the network has "
                f"{len(channels)} scales (channels {tuple(channels)}): give one block size per scale, finest first."
            )
            raise ValueError(msg)
        self.granularity = tuple(int(k) for k in granularity)
        self.use_memory = use_memory
        self.skips = skips
        widths = [in_channels, *channels]
        self.encoder = nn.ModuleList(_conv_block(widths[i], widths[i + 1], stride=2) for i in range(len(channels)))
        # A memory on every scale the decoder reads (all with skips, the bottleneck alone without).
        read_scales = range(len(channels)) if skips else [len(channels) - 1]
        self.memories = nn.ModuleDict(
            {
                str(scale): BlockMemory(
                    channels[scale], self.granularity[scale], num_items, similarity, shrink_threshold, temperature
                )
                for scale in read_scales
            }
            if use_memory
            else {}
        )
        # Decoder stage i merges the upsampled deeper output with the memory read of scale i (if skips).
        self.decoder = nn.ModuleList(
            _conv_block(channels[i] * skips + channels[i + 1], channels[i]) for i in range(len(channels) - 1)
        )
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(channels[0], in_channels, kernel_size=3, padding=1),
            nn.Sigmoid(),
        )

    def read(self, scale: int, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pass one scale's features through its memory (or unchanged without memory).

        Args:
            scale: Scale index, 0 = finest.
            features: Encoder features ``(B, C_i, H_i, W_i)``.

        Returns:
            The map the decoder sees ``(B, C_i, H_i, W_i)`` and the addressing entropy (scalar).

        """
        if str(scale) not in self.memories:
            return features, features.new_zeros(())
        readout = self.memories[str(scale)](features)
        return readout.output, readout.entropy

    def forward(self, images: torch.Tensor) -> Reconstruction:
        """Reconstruct images from memory reads.

        Args:
            images: Images ``(B, C, H, W)``, sides multiples of :func:`input_size_multiple`.

        Returns:
            :class:`Reconstruction` with the images ``(B, C, H, W)`` and the mean entropy.

        """
        check_input_size(images.shape[-2:], self.granularity)
        reads: list[torch.Tensor] = []
        entropies: list[torch.Tensor] = []
        features = images
        bottleneck = len(self.encoder) - 1
        for scale, stage in enumerate(self.encoder):
            features = stage(features)
            if self.skips or scale == bottleneck:
                read, entropy = self.read(scale, features)
                reads.append(read)
                entropies.append(entropy)
        decoded = reads[-1]
        for scale in range(len(self.decoder) - 1, -1, -1):
            upsampled = self.upsample(decoded)
            decoded = self.decoder[scale](torch.cat([upsampled, reads[scale]], dim=1) if self.skips else upsampled)
        return Reconstruction(self.head(decoded), torch.stack(entropies).mean())


class DivideAssembleModel(nn.Module):
    """DAAD / DAAD+: memory autoencoder, discriminator and anomaly map in one module.

    In training mode it returns the :class:`Reconstruction`; in eval mode the
    ``InferenceBatch(pred_score, anomaly_map)`` that anomalib post-processes and exports.

    Args:
        autoencoder: The memory autoencoder (generator).
        discriminator: The adversarial discriminator; its latent features feed DAAD+.
        anomaly_map: Map and score builder; ``latent_weight > 0`` gives DAAD+.
        segmenter: Optional defect segmenter reading image and reconstruction; when given, its defect
            probabilities are the map instead of the reconstruction error (see :mod:`.segmentation`).

    Example:
        >>> model = DivideAssembleModel(
        ...     MemoryAutoencoder(channels=(8, 16), granularity=(2, 1), num_items=10),
        ...     Discriminator(channels=(8, 16)),
        ... )
        >>> model.train()(torch.rand(2, 3, 32, 32)).image.shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(
        self,
        autoencoder: MemoryAutoencoder,
        discriminator: Discriminator,
        anomaly_map: AnomalyMapGenerator | None = None,
        segmenter: DefectSegmenter | None = None,
    ) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.discriminator = discriminator
        self.anomaly_map = anomaly_map or AnomalyMapGenerator()
        self.segmenter = segmenter

    @property
    def in_channels(self) -> int:
        """Image channels the network expects; one-channel inputs are repeated to this many."""
        return self.autoencoder.in_channels

    @property
    def granularity(self) -> tuple[int, ...]:
        """Block side per scale, finest first."""
        return self.autoencoder.granularity

    def forward(self, images: torch.Tensor) -> Reconstruction | InferenceBatch:
        """Reconstruct (training) or score (eval) a batch.

        Args:
            images: Pre-processed images ``(B, C, H, W)`` with ``C`` 1 or ``in_channels``.

        Returns:
            Training: :class:`Reconstruction`. Eval: ``InferenceBatch`` with ``pred_score``
            ``(B,)`` and ``anomaly_map`` ``(B, 1, H, W)``.

        """
        if images.shape[1] == 1 and self.in_channels != 1:
            images = images.expand(-1, self.in_channels, -1, -1)
        reconstruction = self.autoencoder(images)
        if self.training:
            return reconstruction
        latent = latent_reconstructed = None
        if self.anomaly_map.latent_weight > 0:
            _, latent = self.discriminator(images)
            _, latent_reconstructed = self.discriminator(reconstruction.image)
        defects = None
        if self.segmenter is not None:
            defects = torch.sigmoid(self.segmenter(images, reconstruction.image))
        anomaly_map = self.anomaly_map(images, reconstruction.image, latent, latent_reconstructed, defects)
        return InferenceBatch(
            pred_score=self.anomaly_map.score(anomaly_map),
            anomaly_map=self.anomaly_map.localize(anomaly_map),
        )
