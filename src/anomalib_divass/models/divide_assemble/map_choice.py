"""Choose the anomaly map per product, without anomaly labels: measure, normalisation and their mix.

With ``error_measure="auto"`` the map computes every measure (l2, ssim, msgms) and mixes them with
``measure_weights``; with ``normalization="auto"`` its normal statistics are either one mean and spread
per measure (``"global"``) or one per pixel (``"pixel"``). After each training epoch the candidates
(L2 alone, MSGMS alone and the equal mix of all three, under each normalisation) are judged on the held-out normal
images: half of them give the candidate's normal statistics, the other half receive synthetic defects
of four kinds (:mod:`.synthetic`), and a candidate scores the mean of its pixel AUROC (defect pixels
against all others) and image AUROC (defective copies against their clean originals). The best one is
stored in the buffers (weights and statistics), logged and kept with the checkpoint.

Example:
    >>> auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
    0.75
    >>> [candidate.name for candidate in map_candidates(ErrorMeasure.AUTO, Normalization.GLOBAL)]
    ['l2/global', 'msgms/global', 'mix/global']

"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from .anomaly_map import MEASURES, AnomalyMapGenerator, ErrorMeasure, Normalization, NormalStatistics
from .synthetic import synthetic_defects

__all__ = ["ALONE", "MapCandidate", "MapChoice", "auroc", "candidate_criteria", "map_candidates"]

# The measures the "auto" choice may also take alone, beside their equal mix: L2 and MSGMS (RIAD's measure).
# SSIM alone never beat the best of the others on real defects in any measurement (bottle, Magnetic Tile, the
# demo washer, and the thin cracks on a textured part of issue 12's held-out set; docs/results/quality.md),
# and the synthetic-defect criterion overrated it on bottle (it chose SSIM at 0.892 pixel AUROC where the mix
# gets 0.936); it stays in the mix. L2 alone stays: it was the best map on that crack set.
ALONE = (ErrorMeasure.L2, ErrorMeasure.MSGMS)


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


class MapCandidate(NamedTuple):
    """One anomaly map the automatic choice may pick.

    Attributes:
        normalization: The statistics it uses (``"global"``, ``"pixel"`` or ``"none"``).
        weights: Weights of the generator's measures (one-hot: one measure; equal: their mix).
        name: ``"<measure or mix>/<normalization>"``.

    """

    normalization: Normalization
    weights: tuple[float, ...]
    name: str


def map_candidates(
    measure: ErrorMeasure, normalization: Normalization, alone: Sequence[ErrorMeasure] = ALONE
) -> list[MapCandidate]:
    """The candidates for a generator's ``measure`` and ``normalization`` (each may be ``"auto"``).

    Args:
        measure: The generator's error measure.
        normalization: The generator's normalisation.
        alone: With ``measure="auto"``, the measures that are candidates alone besides the equal mix
            (``MEASURES`` to judge every one, as ``benchmarks/quality_probe.py`` does).

    Returns:
        Candidates, in a fixed order (the same in every process).

    """
    normalizations = (
        [Normalization.GLOBAL, Normalization.PIXEL] if normalization is Normalization.AUTO else [normalization]
    )
    if measure is ErrorMeasure.AUTO:
        count = len(MEASURES)
        single = [(tuple(float(i == j) for j in range(count)), kind.value) for i, kind in enumerate(MEASURES)]
        mixes = [
            *[choice for choice, kind in zip(single, MEASURES, strict=True) if kind in alone],
            (tuple(1.0 / count for _ in range(count)), "mix"),
        ]
    else:
        mixes = [((1.0,), measure.value)]
    return [MapCandidate(norm, weights, f"{label}/{norm.value}") for norm in normalizations for weights, label in mixes]


class MapChoice(NamedTuple):
    """The outcome of the automatic choice.

    Attributes:
        candidates: Every candidate judged.
        criteria: Their criteria (mean of synthetic pixel and image AUROC) ``(K,)``.

    """

    candidates: Sequence[MapCandidate]
    criteria: torch.Tensor

    @property
    def best(self) -> MapCandidate:
        """The chosen candidate."""
        return self.candidates[int(self.criteria.argmax())]

    @property
    def reason(self) -> str:
        """One sentence for the log and the checkpoint."""
        ranking = ", ".join(
            f"{candidate.name} {value:.3f}"
            for candidate, value in zip(self.candidates, self.criteria.tolist(), strict=True)
        )
        return (
            f"anomaly map '{self.best.name}' separates synthetic defects on held-out normal images best "
            f"(mean of pixel and image AUROC: {ranking})."
        )


@torch.no_grad()
def candidate_criteria(
    generator: AnomalyMapGenerator,
    reconstruct: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    candidates: Sequence[MapCandidate],
    seed: int = 0,
) -> torch.Tensor:
    """Judge every candidate on held-out normal images: statistics from one half, synthetic defects on the other.

    Args:
        generator: The anomaly map (its measures; its buffers are not changed).
        reconstruct: Images ``(B, C, H, W)`` to reconstructions (eval mode).
        images: Held-out normal images ``(B, C, H, W)``, at least 4.
        candidates: From :func:`map_candidates`.
        seed: Seed of the synthetic defects.

    Returns:
        Criteria ``(K,)``, each the mean of the candidate's pixel and image AUROC.

    """
    half = len(images) // 2
    reference, judged = images[:half], images[half:]
    defective, masks = synthetic_defects(judged.cpu(), seed=seed)
    reference_maps = generator.reconstruction_error(reference, reconstruct(reference))
    clean_maps = generator.reconstruction_error(judged, reconstruct(judged))
    defective_maps = generator.reconstruction_error(defective.to(images), reconstruct(defective.to(images)))
    statistics = NormalStatistics()
    statistics.update(reference_maps)
    image_labels = torch.cat([torch.zeros(len(judged)), torch.ones(len(judged))])
    criteria = []
    for candidate in candidates:
        if candidate.normalization is Normalization.NONE:
            mean, spread = torch.zeros(()), torch.ones(())
        else:
            mean, spread = (value.to(images) for value in statistics.result(candidate.normalization))
        weights = torch.tensor(candidate.weights, device=images.device).reshape(1, -1, 1, 1)
        clean = (((clean_maps - mean) / spread) * weights).sum(dim=1, keepdim=True)
        broken = (((defective_maps - mean) / spread) * weights).sum(dim=1, keepdim=True)
        pixel = auroc(broken.cpu(), masks)
        image = auroc(torch.cat([generator.score(clean), generator.score(broken)]).cpu(), image_labels)
        criteria.append((pixel + image) / 2)
    return torch.tensor(criteria)
