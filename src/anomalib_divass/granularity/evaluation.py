"""Train one granularity setting in a plain loop and score image sets with it.

A setting is trained without a ``Trainer``: a loop over the epochs calls the model's own
``training_step`` through Lightning's ``Fabric`` (which gives it its two optimizers and its backward
pass) on the device it is given, so a caller's training (the ``ChooseGranularity`` callback) is not
nested in another ``Engine``. The random state of the process is the same after the training as
before it (:func:`seeded`): every setting starts from the same seed, and the caller's seed still
decides its own model.

One trained network serves every score: DAAD (reconstruction error) and DAAD+ (plus the
discriminator's latent error) are read from the same forward pass, on held-out images with
synthetic defects and, when given, on the real test set.

Example:
    >>> import torch
    >>> from anomalib_divass import DivideAssemble
    >>> from anomalib_divass.models.divide_assemble.lightning_model import DAAD_PLUS_LATENT_WEIGHT
    >>> model = DivideAssemble(channels=[8, 16], granularity=[2, 1], pre_processor=False)
    >>> batch = (torch.rand(2, 3, 32, 32), torch.zeros(2, 1, 32, 32), torch.tensor([0, 1]))
    >>> scored = score_batches(model, [batch], {"DAAD": 0.0, "DAAD+": DAAD_PLUS_LATENT_WEIGHT})
    >>> scored.scores["DAAD+"].shape, scored.maps["DAAD"].shape
    (torch.Size([2]), torch.Size([2, 32, 32]))

"""

from __future__ import annotations

import copy
import inspect
import random
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from anomalib.data.datasets.base.image import AnomalibDataset
from lightning.fabric import Fabric
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import binary_auroc

from ..models import DivideAssemble
from ..models.divide_assemble.variants import Variant
from .settings import GranularitySetting

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "ScoredSet",
    "dataset_batches",
    "model_defaults",
    "resolve_device",
    "score_batches",
    "seeded",
    "separation",
    "setting_variant",
    "train_setting",
]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

DEFAULT_BATCH_SIZE = 8  # training batch size of every setting
# Constructor arguments of DivideAssemble that are anomalib components, not settings of the network.
COMPONENTS = ("pre_processor", "post_processor", "evaluator", "visualizer")


@dataclass
class ScoredSet:
    """Scores of one image set under one trained network.

    Attributes:
        labels: Image labels ``(N,)``, 1 = anomalous.
        errors: Mean squared reconstruction error per image ``(N,)``.
        scores: Image score ``(N,)`` per variant name.
        maps: Anomaly map ``(N, H, W)`` per variant name.
        masks: Ground-truth masks ``(N, H, W)``, boolean.

    """

    labels: torch.Tensor
    errors: torch.Tensor
    scores: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor]
    masks: torch.Tensor


def model_defaults() -> dict[str, Any]:
    """``DivideAssemble``'s constructor arguments and their defaults, without the anomalib components.

    The model's signature is the one place where these defaults are written.

    Returns:
        Argument name to default value, in signature order.

    Example:
        >>> defaults = model_defaults()
        >>> list(defaults)[:3], "pre_processor" in defaults
        (['granularity', 'channels', 'num_items'], False)

    """
    parameters = inspect.signature(DivideAssemble.__init__).parameters
    return {
        name: parameter.default
        for name, parameter in parameters.items()
        if name != "self" and name not in COMPONENTS and parameter.default is not inspect.Parameter.empty
    }


def setting_variant(setting: GranularitySetting, variant: str | None = None) -> str:
    """The ``DivideAssemble`` variant a setting trains: ``AE+Skip`` without memory, else DAAD or DAAD+.

    Args:
        setting: The setting.
        variant: The variant asked for; a block-memory setting keeps ``DAAD`` or ``DAAD+`` (they train alike),
            anything else becomes ``DAAD``.

    Returns:
        The variant's name.

    Example:
        >>> from anomalib_divass.granularity.settings import GranularitySetting
        >>> blocks = GranularitySetting("k=4", (4, 4))
        >>> setting_variant(blocks, "DAAD+"), setting_variant(blocks, "MemAE"), setting_variant(blocks)
        ('DAAD+', 'DAAD', 'DAAD')
        >>> setting_variant(GranularitySetting("vanilla AE", (4, 4), use_memory=False), "DAAD")
        'AE+Skip'

    """
    if not setting.use_memory:
        return Variant.AE_SKIP.value
    block_memories = {Variant.DAAD, Variant.DAAD_PLUS}
    return variant if variant is not None and Variant(variant) in block_memories else Variant.DAAD.value


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """The device a setting is trained on: ``device`` itself, or for ``None`` / ``"auto"`` a GPU if there is one.

    Args:
        device: A device, a device name (``"cpu"``, ``"cuda:1"``, ``"gpu"``), ``"auto"`` or ``None``.

    Returns:
        The device.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')

    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device) == "gpu":  # Lightning's name
        return torch.device("cuda")
    return torch.device(device)


def _fabric(device: torch.device) -> Fabric:
    """A single-device ``Fabric`` on ``device``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return Fabric(accelerator="cuda", devices=[index])
    if device.type == "mps":
        return Fabric(accelerator="mps", devices=1)
    return Fabric(accelerator="cpu", devices=1)


@contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed Python, NumPy and torch (CPU, and ``device`` when it is a GPU) inside the block only.

    Unlike ``seed_everything``, the process's random state is given back when the block ends, and no
    environment variable is set: what the caller draws afterwards does not depend on what ran inside.

    Args:
        seed: The seed.
        device: The GPU whose generator is seeded and restored too (others are left alone).

    Example:
        >>> state = torch.random.get_rng_state()
        >>> with seeded(0):
        ...     first = torch.rand(1)
        >>> with seeded(0):
        ...     again = torch.rand(1)
        >>> bool(torch.equal(first, again)), bool(torch.equal(torch.random.get_rng_state(), state))
        (True, True)

    """
    gpus = []
    if device is not None and device.type == "cuda":
        gpus = [device.index if device.index is not None else torch.cuda.current_device()]
    python_state, numpy_state = random.getstate(), np.random.get_state()  # the global state
    with torch.random.fork_rng(devices=gpus):
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)  # torch.manual_seed would also seed every GPU, unforked
        for index in gpus:  # forked above, so CUDA is initialised
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def train_setting(
    setting: GranularitySetting,
    train_dataset: AnomalibDataset,
    epochs: int,
    model_arguments: Mapping[str, Any] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int = 0,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> DivideAssemble:
    """Train ``DivideAssemble`` with the setting's granularity on ``train_dataset``, in a plain loop.

    The dataset must already resize to the model's input size (its ``augmentations``). Every epoch
    runs the model's ``training_step`` over the shuffled images (``Fabric`` provides the optimizers
    and the backward pass); there is no checkpoint, logger, validation or post-processing, the sweep
    reads raw scores. The process's random state is unchanged afterwards (see :func:`seeded`).

    Args:
        setting: Granularity and memory switch (see :func:`setting_variant`).
        train_dataset: Normal training images.
        epochs: Training epochs.
        model_arguments: Further ``DivideAssemble`` arguments (``channels``, ``num_items``, ``variant`` ...).
        batch_size: Training batch size.
        num_workers: Data-loading workers.
        seed: Seed of weights and shuffling, the same for every setting.
        device: Where to train (see :func:`resolve_device`); the caller's device when a callback trains.

    Returns:
        The trained model, in eval mode, on ``device``.

    """
    device = resolve_device(device)
    # A copy per setting: no module (a shared pre-processor, say) is trained or switched to eval twice.
    arguments = {
        "pre_processor": False,  # the dataset resizes; the loop applies no pre-processor
        **copy.deepcopy(dict(model_arguments or {})),
        "granularity": setting.granularity,
    }
    arguments["variant"] = setting_variant(setting, arguments.get("variant"))
    with seeded(seed, device):
        model = DivideAssemble(**arguments, post_processor=False, evaluator=False, visualizer=False)
        loader = DataLoader(
            train_dataset,
            batch_size=batch_size,
            shuffle=True,
            num_workers=num_workers,
            collate_fn=train_dataset.collate_fn,
            generator=torch.Generator().manual_seed(seed),
        )
        fabric = _fabric(device)
        fabric.setup(model, *model.configure_optimizers())  # the model's own optimizers, on the device
        model.train()
        for _ in range(epochs):
            for index, batch in enumerate(loader):
                model.training_step(fabric.to_device(batch), index)
    return model.eval()


def dataset_batches(dataset: AnomalibDataset, batch_size: int = 16, num_workers: int = 0) -> Iterable[Batch]:
    """``(images, masks, labels)`` batches of an anomalib dataset (already resized by its augmentations)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=dataset.collate_fn)
    for batch in loader:
        masks = batch.gt_mask if batch.gt_mask is not None else torch.zeros_like(batch.image[:, :1])
        yield batch.image, masks, batch.gt_label


@torch.no_grad()
def score_batches(model: DivideAssemble, batches: Iterable[Batch], latent_weights: Mapping[str, float]) -> ScoredSet:
    """Score image batches with one network under several anomaly-map variants.

    The network's own ``AnomalyMapGenerator`` (smoothing, image score) builds every map; a
    variant only changes its ``latent_weight`` (0: DAAD, > 0: DAAD+).

    Args:
        model: A trained ``DivideAssemble``.
        batches: ``(images (B, C, H, W), masks (B, 1, H, W) or (B, H, W), labels (B,))`` at the model's input size
            (moved to the network's device; the results are on the CPU).
        latent_weights: Variant name to latent weight, e.g. ``{"DAAD": 0.0, "DAAD+": DAAD_PLUS_LATENT_WEIGHT}``.

    Returns:
        The :class:`ScoredSet` of all batches.

    """
    network = model.model.eval()
    device = next(network.parameters()).device
    generators = {}
    for name, weight in latent_weights.items():
        generators[name] = copy.copy(network.anomaly_map)
        generators[name].latent_weight = weight
    labels, errors, masks = [], [], []
    scores: dict[str, list[torch.Tensor]] = {name: [] for name in latent_weights}
    maps: dict[str, list[torch.Tensor]] = {name: [] for name in latent_weights}
    for batch_images, batch_masks, batch_labels in batches:
        images = batch_images.to(device)
        if images.shape[1] == 1 and network.in_channels != 1:
            images = images.expand(-1, network.in_channels, -1, -1)
        reconstruction = network.autoencoder(images).image
        latent = latent_reconstructed = None
        if any(weight > 0 for weight in latent_weights.values()):
            _, latent = network.discriminator(images)
            _, latent_reconstructed = network.discriminator(reconstruction)
        for name, generator in generators.items():
            anomaly_map = generator(images, reconstruction, latent, latent_reconstructed)
            scores[name].append(generator.score(anomaly_map).cpu())
            maps[name].append(anomaly_map[:, 0].cpu())
        errors.append((images - reconstruction).pow(2).flatten(1).mean(dim=1).cpu())
        labels.append(batch_labels.long())
        masks.append(batch_masks.reshape(images.shape[0], *images.shape[-2:]) > 0)
    return ScoredSet(
        labels=torch.cat(labels),
        errors=torch.cat(errors),
        scores={name: torch.cat(values) for name, values in scores.items()},
        maps={name: torch.cat(values) for name, values in maps.items()},
        masks=torch.cat(masks),
    )


def separation(scored: ScoredSet, variant: str) -> dict[str, float]:
    """How well one variant separates the anomalous images (and pixels) from the normal ones.

    Args:
        scored: Scores of an image set with both normal and anomalous images.
        variant: Variant name (a key of ``scored.scores``).

    Returns:
        ``normal_error`` and ``abnormal_error`` (mean squared reconstruction error of each group),
        ``error_gap`` (their difference), ``image_AUROC`` and ``pixel_AUROC``.

    Raises:
        ValueError: If the set lacks normal or anomalous images.

    """
    normal, abnormal = scored.labels == 0, scored.labels == 1
    if not normal.any() or not abnormal.any():
        msg = f"Separation needs normal and anomalous images; got {int(normal.sum())} and {int(abnormal.sum())}."
        raise ValueError(msg)
    normal_error, abnormal_error = scored.errors[normal].mean().item(), scored.errors[abnormal].mean().item()
    pixel_auroc = float("nan")
    if scored.masks.any():
        pixel_auroc = binary_auroc(scored.maps[variant].flatten(), scored.masks.flatten().long()).item()
    return {
        "normal_error": normal_error,
        "abnormal_error": abnormal_error,
        "error_gap": abnormal_error - normal_error,
        "image_AUROC": binary_auroc(scored.scores[variant], scored.labels).item(),
        "pixel_AUROC": pixel_auroc,
    }
