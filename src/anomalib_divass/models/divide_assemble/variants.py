"""The paper's five models, one argument apart: AE, MemAE, AE+Skip, DAAD and DAAD+.

Hou et al. compare Divide-and-Assemble with three autoencoders built from the same parts; here they
are the same network code with parts switched off, chosen by ``DivideAssemble(variant=...)``:

================  ===============  ===================================  ============================
variant           skip connections memory                               anomaly map
================  ===============  ===================================  ============================
``AE``            no               none                                 reconstruction error
``MemAE``         no               pixel-wise (block 1), bottleneck     reconstruction error
``AE+Skip``       yes              none                                 reconstruction error
``DAAD``          yes              block-wise, every scale              reconstruction error
``DAAD+``         yes              block-wise, every scale              + discriminator latent error
================  ===============  ===================================  ============================

All five train the same way (with the discriminator), so DAAD and DAAD+ share their weights and
differ only in scoring.

Example:
    >>> Variant("DAAD+").architecture
    Architecture(skips=True, memory=True, pixel_memory=False)
    >>> Variant("MemAE").architecture
    Architecture(skips=False, memory=True, pixel_memory=True)

"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

__all__ = ["Architecture", "Variant"]


class Architecture(NamedTuple):
    """What a variant builds.

    Attributes:
        skips: Whether the decoder reads every scale (a U-Net) or the bottleneck alone.
        memory: Whether the scales the decoder reads pass through memories.
        pixel_memory: Whether the memory is pixel-wise (block size 1), as MemAE's.

    """

    skips: bool
    memory: bool
    pixel_memory: bool


class Variant(str, Enum):
    """One of the paper's five models."""

    AE = "AE"
    MEMAE = "MemAE"
    AE_SKIP = "AE+Skip"
    DAAD = "DAAD"
    DAAD_PLUS = "DAAD+"

    @property
    def architecture(self) -> Architecture:
        """The network this variant builds."""
        return {
            Variant.AE: Architecture(skips=False, memory=False, pixel_memory=False),
            Variant.MEMAE: Architecture(skips=False, memory=True, pixel_memory=True),
            Variant.AE_SKIP: Architecture(skips=True, memory=False, pixel_memory=False),
            Variant.DAAD: Architecture(skips=True, memory=True, pixel_memory=False),
            Variant.DAAD_PLUS: Architecture(skips=True, memory=True, pixel_memory=False),
        }[self]

    @property
    def scores_latent(self) -> bool:
        """Whether the anomaly map adds the discriminator's latent error (DAAD+)."""
        return self is Variant.DAAD_PLUS
