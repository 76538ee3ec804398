"""Divide-and-Assemble (DAAD, Hou et al., ICCV 2021): block-wise memory anomaly detection.

The paper, bottom up: :mod:`.memory` (``BlockMemory``, ``divide``, ``assemble``), :mod:`.discriminator`,
:mod:`.loss`, :mod:`.anomaly_map`, :mod:`.torch_model` (the network), :mod:`.lightning_model` (the
anomalib model); :mod:`.checkpoint`, :mod:`.export` and :mod:`.distributed` are what the model needs to
load, export and train on several processes. This folder imports torch, anomalib, Lightning, the
standard library and itself only.

Example:
    >>> from anomalib_divass.models.divide_assemble import DivideAssemble
    >>> DivideAssemble(pre_processor=False).model.granularity
    (32, 16, 8, 4, 2)

"""

from .lightning_model import DivideAssemble
from .torch_model import DivideAssembleModel, MemoryAutoencoder

__all__ = ["DivideAssemble", "DivideAssembleModel", "MemoryAutoencoder"]
