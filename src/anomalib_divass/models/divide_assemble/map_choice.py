"""Choose the error measure of the anomaly map per product, without anomaly labels.

With ``error_measure="auto"`` the map computes every measure (l2, ssim, msgms), each on the normal
scale of the held-out images, and mixes them with ``measure_weights``. After each training epoch those
weights become a one-hot choice: synthetic defects of four kinds (:mod:`.synthetic`) are pasted on the
held-out normal images, and the measure whose map separates them best wins, judged by the mean of its
pixel AUROC (defect pixels against all others) and image AUROC (defective copies against the clean
images). A structural measure wins on aligned objects with broken edges, a plain squared error on
textures whose fine structure never rebuilds well; the choice is logged and kept with the checkpoint.

Example:
    >>> auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
    0.75

"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .anomaly_map import AnomalyMapGenerator
from .synthetic import synthetic_defects

__all__ = ["MeasureChoice", "auroc", "measure_criteria"]


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney statistic, ties counted half).

    Args:
        scores: Scores, any shape.
        labels: 0/1 labels of the same shape, both classes present.

    Returns:
        The AUROC in ``[0, 1]``.

    Raises:
        ValueError: If one class is missing.

    """
    scores, labels = scores.flatten().double(), labels.flatten().bool()
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        msg = "AUROC needs both classes."
        raise ValueError(msg)
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = (ends - (counts.double() - 1) / 2)[inverse]  # average rank (1-based) of tied values
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


class MeasureChoice:
    """The outcome of :func:`choose_measure`.

    Args:
        criteria: Per measure, the mean of synthetic pixel and image AUROC ``(M,)``.
        names: The measures' names.
    """

    def __init__(self, criteria: torch.Tensor, names: tuple[str, ...]) -> None:
        self.criteria = criteria
        self.names = names

    @property
    def index(self) -> int:
        """Index of the chosen measure."""
        return int(self.criteria.argmax())

    @property
    def weights(self) -> torch.Tensor:
        """One-hot ``measure_weights`` ``(M,)``."""
        weights = torch.zeros(len(self.names))
        weights[self.index] = 1.0
        return weights

    @property
    def reason(self) -> str:
        """One sentence for the log and the checkpoint."""
        values = self.criteria.tolist()
        ranking = ", ".join(f"{name} {value:.3f}" for name, value in zip(self.names, values, strict=True))
        return (
            f"error measure '{self.names[self.index]}' separates synthetic defects on held-out normal images best "
            f"(mean of pixel and image AUROC: {ranking})."
        )


@torch.no_grad()
def measure_criteria(
    generator: AnomalyMapGenerator,
    reconstruct: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    seed: int = 0,
) -> torch.Tensor:
    """Per measure, the mean of pixel and image AUROC on synthetic defects pasted on ``images``.

    Args:
        generator: The anomaly map (its normal statistics already set).
        reconstruct: Images ``(B, C, H, W)`` to reconstructions.
        images: Held-out normal images ``(B, C, H, W)``, at least 2.
        seed: Seed of the synthetic defects.

    Returns:
        Criteria ``(M,)``.

    """
    defective, masks = synthetic_defects(images.cpu(), seed=seed)
    defective = defective.to(images)
    clean_maps = generator.normalize(generator.reconstruction_error(images, reconstruct(images)), "normal")
    defective_maps = generator.normalize(generator.reconstruction_error(defective, reconstruct(defective)), "normal")
    image_labels = torch.cat([torch.zeros(len(images)), torch.ones(len(images))])
    criteria = []
    for index in range(clean_maps.shape[1]):
        clean, broken = clean_maps[:, index : index + 1], defective_maps[:, index : index + 1]
        pixel = auroc(broken.cpu(), masks)
        image = auroc(torch.cat([generator.score(clean), generator.score(broken)]).cpu(), image_labels)
        criteria.append((pixel + image) / 2)
    return torch.tensor(criteria)
