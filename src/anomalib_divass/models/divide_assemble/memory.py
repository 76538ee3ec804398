"""Block-wise memory: divide a feature map into blocks, read each from a memory, assemble.

The memory of Divide-and-Assemble (Hou et al., ICCV 2021) treats a ``k x k`` block of feature
cells as one query. Every query addresses a learned set of ``N`` memory items of size
``C * k * k`` through similarity and softmax; MemAE's hard shrinkage keeps the addressing
sparse, and the read (a convex combination of items) replaces the block. The block side
``k`` is the *granularity*: ``k = 1`` is MemAE's pixel-wise memory, ``k`` equal to the map
side is one memory vector for the whole map.

Example:
    >>> import torch
    >>> memory = BlockMemory(channels=8, block_size=4, num_items=16)
    >>> readout = memory(torch.randn(2, 8, 16, 16))
    >>> readout.output.shape, readout.weights.shape
    (torch.Size([2, 8, 16, 16]), torch.Size([32, 16]))

"""

from __future__ import annotations

import math
from enum import Enum
from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["BlockMemory", "MemoryReadout", "Similarity", "assemble", "divide", "hard_shrink", "weight_entropy"]


class Similarity(str, Enum):
    """How a block query is compared with the memory items."""

    COSINE = "cosine"
    DOT = "dot"


class MemoryReadout(NamedTuple):
    """What a :class:`BlockMemory` returns.

    Attributes:
        output: Assembled read-out, same shape as the input ``(B, C, H, W)``.
        weights: Sparse addressing weights, ``(B * H/k * W/k, N)``, rows sum to 1.
        entropy: Mean entropy of the addressing weights, a scalar (the MemAE entropy loss).

    """

    output: torch.Tensor
    weights: torch.Tensor
    entropy: torch.Tensor


def divide(features: torch.Tensor, block_size: int) -> torch.Tensor:
    """Divide a feature map into non-overlapping ``k x k`` blocks, one row per block.

    Args:
        features: Feature map of shape ``(B, C, H, W)``; ``H`` and ``W`` divisible by ``k``.
        block_size: Block side ``k`` in feature cells.

    Returns:
        Blocks of shape ``(B * H/k * W/k, C * k * k)``, ordered batch, block row, block column.

    Raises:
        ValueError: If the map is not divisible into ``k x k`` blocks.

    Example:
        >>> divide(torch.zeros(2, 3, 8, 8), 4).shape
        torch.Size([8, 48])

    """
    batch, channels, height, width = features.shape
    k = block_size
    if height % k or width % k:
        msg = (
            f"A {height} x {width} feature map cannot be divided into {k} x {k} blocks. "
            f"Use a block size that divides the map, or an input size whose feature maps it divides."
        )
        raise ValueError(msg)
    blocks = features.reshape(batch, channels, height // k, k, width // k, k)
    return blocks.permute(0, 2, 4, 1, 3, 5).reshape(-1, channels * k * k)


def assemble(blocks: torch.Tensor, block_size: int, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Assemble blocks back into a feature map; the exact inverse of :func:`divide`.

    Args:
        blocks: Blocks of shape ``(B * H/k * W/k, C * k * k)``.
        block_size: Block side ``k`` in feature cells.
        shape: Shape ``(B, C, H, W)`` of the map to rebuild.

    Returns:
        Feature map of shape ``(B, C, H, W)``.

    Example:
        >>> x = torch.randn(2, 3, 8, 8)
        >>> torch.equal(assemble(divide(x, 4), 4, x.shape), x)
        True

    """
    batch, channels, height, width = shape
    k = block_size
    grid = blocks.reshape(batch, height // k, width // k, channels, k, k)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, height, width)


def hard_shrink(weights: torch.Tensor, threshold: float, eps: float = 1e-12) -> torch.Tensor:
    """MemAE's hard shrinkage followed by L1 re-normalisation.

    ``relu(w - t) * w / (|w - t| + eps)`` sets weights below ``t`` to zero and keeps the
    others (almost) unchanged, with a gradient that flows through the kept ones.

    Args:
        weights: Non-negative addressing weights ``(Q, N)`` whose rows sum to 1.
        threshold: Shrink threshold ``t``; 0 disables shrinkage.
        eps: Guard against division by zero.

    Returns:
        Sparse weights ``(Q, N)`` whose rows sum to 1.

    Example:
        >>> hard_shrink(torch.tensor([[0.7, 0.299, 0.001]]), 0.01)
        tensor([[0.7007, 0.2993, 0.0000]])

    """
    if threshold <= 0:
        return weights
    shifted = weights - threshold
    shrunk = F.relu(shifted) * weights / (shifted.abs() + eps)
    return shrunk / shrunk.sum(dim=-1, keepdim=True).clamp_min(eps)


def weight_entropy(weights: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean entropy ``-sum w log w`` of addressing weights (low when one item dominates).

    Args:
        weights: Addressing weights ``(Q, N)``.
        eps: Guard for ``log(0)``.

    Returns:
        Scalar tensor, the mean entropy over the ``Q`` queries.

    Example:
        >>> round(float(weight_entropy(torch.tensor([[0.5, 0.5]]))), 4)  # log 2
        0.6931

    """
    return -(weights * torch.log(weights + eps)).sum(dim=-1).mean()


class BlockMemory(nn.Module):
    """A learned memory of normal blocks, read block by block.

    Args:
        channels: Channels ``C`` of the feature map it reads.
        block_size: Block side ``k`` in feature cells (the granularity at this scale).
        num_items: Number of memory items ``N``.
        similarity: ``"cosine"`` or ``"dot"`` addressing.
        shrink_threshold: Hard-shrinkage threshold; 0 keeps the dense softmax weights.
        temperature: Softmax temperature for cosine addressing (cosine lies in ``[-1, 1]``,
            too flat for a softmax over many items without it). Ignored for ``"dot"``.

    Example:
        >>> memory = BlockMemory(channels=4, block_size=2, num_items=10)
        >>> memory(torch.randn(1, 4, 8, 8)).output.shape
        torch.Size([1, 4, 8, 8])

    """

    def __init__(
        self,
        channels: int,
        block_size: int,
        num_items: int = 100,
        similarity: Similarity | str = Similarity.COSINE,
        shrink_threshold: float = 0.0025,
        temperature: float = 0.05,
    ) -> None:
        super().__init__()
        if block_size < 1 or num_items < 1 or channels < 1:
            msg = f"channels, block_size and num_items must be positive, got {channels}, {block_size}, {num_items}."
            raise ValueError(msg)
        self.channels = channels
        self.block_size = block_size
        self.similarity = Similarity(similarity)
        self.shrink_threshold = shrink_threshold
        self.temperature = temperature
        dim = channels * block_size * block_size
        bound = 1.0 / math.sqrt(dim)
        self.items = nn.Parameter(torch.empty(num_items, dim).uniform_(-bound, bound))

    @property
    def num_items(self) -> int:
        """Number of memory items ``N``."""
        return self.items.shape[0]

    def address(self, queries: torch.Tensor) -> torch.Tensor:
        """Addressing weights of block queries over the memory items.

        Args:
            queries: Block queries ``(Q, C * k * k)``.

        Returns:
            Sparse weights ``(Q, N)`` whose rows sum to 1.

        """
        if self.similarity is Similarity.COSINE:
            logits = F.normalize(queries, dim=-1) @ F.normalize(self.items, dim=-1).t() / self.temperature
        else:
            logits = queries @ self.items.t()
        return hard_shrink(torch.softmax(logits, dim=-1), self.shrink_threshold)

    def forward(self, features: torch.Tensor) -> MemoryReadout:
        """Divide ``features`` into blocks, read each from memory, assemble the reads.

        Args:
            features: Feature map ``(B, C, H, W)`` with ``H`` and ``W`` divisible by ``k``.

        Returns:
            :class:`MemoryReadout` with the assembled map ``(B, C, H, W)``, the weights
            ``(B * H/k * W/k, N)`` and their mean entropy.

        """
        queries = divide(features, self.block_size)
        weights = self.address(queries)
        output = assemble(weights @ self.items, self.block_size, features.shape)
        return MemoryReadout(output, weights, weight_entropy(weights))

    def extra_repr(self) -> str:
        """Summary shown by ``print(module)``."""
        return (
            f"channels={self.channels}, block_size={self.block_size}, num_items={self.num_items}, "
            f"similarity={self.similarity.value}, shrink_threshold={self.shrink_threshold}"
        )
