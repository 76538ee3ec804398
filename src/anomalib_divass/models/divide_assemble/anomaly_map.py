"""Anomaly map of Divide-and-Assemble: how far each pixel is from its reconstruction, on a normal scale.

Three error measures compare an image with its reconstruction, each a map ``(B, 1, H, W)`` that is
exactly zero where the two are identical:

* ``"l2"``: the squared difference, averaged over channels (the paper's reconstruction error);
* ``"ssim"``: one minus the structural similarity (Wang et al. 2004; Gaussian window, sigma 1.5),
  averaged over channels: insensitive to a uniform brightness change, sensitive to lost structure;
* ``"msgms"``: one minus the multi-scale gradient magnitude similarity (as in RIAD, Zavrtanik et al.
  2021), on the grey image at four scales: compares edges, so a missing or added edge stands out.

The map is smoothed with a Gaussian. It can then be put on the scale of normal images
(``normalization``): ``"pixel"`` subtracts, per pixel, the mean error of held-out normal images and
divides by their spread (aligned products: a bottle's rim always reconstructs worse than its
flat bottom); ``"global"`` does so with one mean and spread for the whole map (textures, unaligned
parts). The statistics are buffers, so they travel with checkpoints and exports. DAAD+ adds the
discriminator's latent error on its own normal scale with weight ``latent_weight``. The image score
is the mean of the map's highest ``top_fraction`` of pixels.

Everything here is plain tensor arithmetic (convolutions, matrix products, interpolation), so it is
exported with the model. SSIM and MSGMS are written here rather than taken from kornia: the model
folder depends only on torch and anomalib, and an exact zero for identical images is part of the
contract (kornia's SSIM leaves about 1e-5).

Example:
    >>> import torch
    >>> generator = AnomalyMapGenerator(measure="msgms", sigma=4.0)
    >>> images = torch.rand(2, 3, 64, 64)
    >>> generator(images, images).abs().max().item()
    0.0
    >>> generator(images, images.flip(-1)).shape
    torch.Size([2, 1, 64, 64])

"""

from __future__ import annotations

import math
from enum import Enum

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = [
    "AnomalyMapGenerator",
    "ErrorMeasure",
    "GradientSimilarityError",
    "Normalization",
    "SeparableGaussianBlur",
    "StructuralError",
    "squared_error",
]


class ErrorMeasure(str, Enum):
    """How an image and its reconstruction are compared, pixel by pixel."""

    L2 = "l2"
    SSIM = "ssim"
    MSGMS = "msgms"
    AUTO = "auto"


MEASURES = (ErrorMeasure.L2, ErrorMeasure.SSIM, ErrorMeasure.MSGMS)


class Normalization(str, Enum):
    """Which statistics of normal images put the map on a common scale."""

    NONE = "none"
    GLOBAL = "global"
    PIXEL = "pixel"
    AUTO = "auto"


def squared_error(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Squared difference averaged over channels.

    Args:
        images: Images ``(B, C, H, W)``.
        reconstructions: Reconstructions ``(B, C, H, W)``.

    Returns:
        Error map ``(B, 1, H, W)``.

    Example:
        >>> squared_error(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)).flatten().tolist()
        [1.0, 1.0, 1.0, 1.0]

    """
    return (images - reconstructions).pow(2).mean(dim=1, keepdim=True)


class SeparableGaussianBlur(nn.Module):
    """Gaussian smoothing of one-channel maps as two matrix products, ``G_h @ map @ G_w^T``.

    A Gaussian filter is separable; written as banded matrices (reflect padding folded in)
    it runs as two matrix multiplications, about ten times faster on a CPU than a 2-D
    convolution with a one-channel ``33 x 33`` kernel, and it exports as plain ``MatMul``.
    The matrices depend only on the map size and are built once per size.

    Args:
        sigma: Standard deviation in pixels.

    Example:
        >>> blur = SeparableGaussianBlur(sigma=2.0)
        >>> blur(torch.ones(1, 1, 16, 16)).allclose(torch.ones(1, 1, 16, 16))
        True

    """

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma
        self.radius = int(4.0 * sigma + 0.5)
        self._matrices: dict[int, torch.Tensor] = {}

    def matrix(self, size: int) -> torch.Tensor:
        """Blur matrix ``(size, size)`` whose row ``i`` holds the taps of output ``i``.

        Built outside ``torch.inference_mode`` even when first asked for inside it (``Engine.test`` and
        ``predict`` run there): a cached inference tensor would break a later export in the same process.
        On a side no longer than the kernel's radius (a small image with a wide smoothing) the kernel is
        cut to ``size - 1`` taps each way, so that one reflection reaches every tap.
        """
        if size not in self._matrices:
            radius = min(self.radius, size - 1)
            with torch.inference_mode(False):
                taps = torch.arange(-radius, radius + 1)
                weights = torch.exp(-0.5 * (taps / self.sigma) ** 2)
                columns = torch.arange(size)[:, None] + taps[None, :]
                columns = columns.abs()  # reflect at the start
                columns = torch.where(columns > size - 1, 2 * (size - 1) - columns, columns)  # and at the end
                weights = (weights / weights.sum()).expand(size, -1)
                self._matrices[size] = torch.zeros(size, size).scatter_add_(1, columns, weights)
        return self._matrices[size]

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Smooth maps ``(B, 1, H, W)``; returns the same shape."""
        rows = self.matrix(maps.shape[-2]).to(maps)
        columns = self.matrix(maps.shape[-1]).to(maps)
        return rows @ maps @ columns.t()


class StructuralError(nn.Module):
    """One minus SSIM, per pixel, averaged over channels; 0 where image and reconstruction agree.

    Local means, variances and covariance come from a Gaussian window (sigma 1.5, as Wang et al.),
    computed with :class:`SeparableGaussianBlur` (reflect padding, exported as matrix products).
    ``c1 = (0.01)^2`` and ``c2 = (0.03)^2`` for images in ``[0, 1]``.

    Args:
        sigma: Standard deviation of the window, in pixels.

    Example:
        >>> error = StructuralError()
        >>> x = torch.rand(1, 3, 32, 32)
        >>> error(x, x).abs().max().item()
        0.0
        >>> bool(error(x, 1 - x).mean() > 0.5)
        True

    """

    C1 = 0.01**2
    C2 = 0.03**2

    def __init__(self, sigma: float = 1.5) -> None:
        super().__init__()
        self.window = SeparableGaussianBlur(sigma)

    def forward(self, images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        """Compute ``1 - SSIM`` maps.

        Args:
            images: Images ``(B, C, H, W)`` in ``[0, 1]``.
            reconstructions: Reconstructions ``(B, C, H, W)``.

        Returns:
            Error map ``(B, 1, H, W)``, 0 for identical inputs, at most 2.

        """
        x, y = images, reconstructions
        mean_x, mean_y = self.window(x), self.window(y)
        var_x = self.window(x * x) - mean_x * mean_x
        var_y = self.window(y * y) - mean_y * mean_y
        covariance = self.window(x * y) - mean_x * mean_y
        numerator = (2 * mean_x * mean_y + self.C1) * (2 * covariance + self.C2)
        denominator = (mean_x * mean_x + mean_y * mean_y + self.C1) * (var_x + var_y + self.C2)
        return (1 - numerator / denominator).mean(dim=1, keepdim=True)


class GradientSimilarityError(nn.Module):
    """One minus the multi-scale gradient magnitude similarity (MSGMS) of the grey images.

    At each of ``scales`` resolutions (halved by average pooling) the gradient magnitudes ``g`` of
    image and reconstruction (Prewitt filters) are compared as ``(2 g_x g_y + c) / (g_x^2 + g_y^2 + c)``;
    one minus that, upsampled to the image, is averaged over the scales.

    Args:
        scales: Number of resolutions (1, 1/2, 1/4, ...).
        constant: Stabilising constant ``c`` for images in ``[0, 1]``.

    Example:
        >>> error = GradientSimilarityError()
        >>> x = torch.rand(2, 1, 32, 32)
        >>> error(x, x).abs().max().item()
        0.0
        >>> error(x, torch.zeros_like(x)).shape
        torch.Size([2, 1, 32, 32])

    """

    def __init__(self, scales: int = 4, constant: float = 0.0026) -> None:
        super().__init__()
        self.scales = scales
        self.constant = constant
        prewitt = torch.tensor([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]]) / 3.0
        self.register_buffer("kernels", torch.stack([prewitt, prewitt.t()]).unsqueeze(1), persistent=False)

    def magnitude(self, grey: torch.Tensor) -> torch.Tensor:
        """Gradient magnitude ``(B, 1, h, w)`` of grey images ``(B, 1, h, w)`` (replicate padding)."""
        gradients = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), self.kernels.to(grey))
        return gradients.pow(2).sum(dim=1, keepdim=True).add(1e-12).sqrt()

    def forward(self, images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        """Compute ``1 - MSGMS`` maps.

        Args:
            images: Images ``(B, C, H, W)`` in ``[0, 1]``.
            reconstructions: Reconstructions ``(B, C, H, W)``.

        Returns:
            Error map ``(B, 1, H, W)`` in ``[0, 1]``, 0 for identical inputs.

        """
        x = images.mean(dim=1, keepdim=True)
        y = reconstructions.mean(dim=1, keepdim=True)
        size = images.shape[-2:]
        total = torch.zeros_like(x)
        for scale in range(self.scales):
            if scale > 0:
                x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
            g_x, g_y = self.magnitude(x), self.magnitude(y)
            similarity = (2 * g_x * g_y + self.constant) / (g_x * g_x + g_y * g_y + self.constant)
            error = 1 - similarity
            if scale > 0:
                error = F.interpolate(error, size=size, mode="bilinear", align_corners=False)
            total = total + error
        return total / self.scales


# Share of the whole map's spread added to each pixel's spread when normalising per pixel.
SPREAD_FLOOR = 0.1


class NormalStatistics:
    """Running mean and spread of error maps of normal images, per pixel and over the whole map.

    Accumulated in float64 from maps ``(B, M, H, W)`` of one size (``M`` error measures, each with
    its own statistics); :meth:`result` gives what
    :meth:`AnomalyMapGenerator.set_statistics` takes. Under several processes, :meth:`totals` are summed
    over processes before :meth:`result`.

    Example:
        >>> statistics = NormalStatistics()
        >>> statistics.update(torch.ones(2, 1, 4, 4))
        >>> statistics.update(3 * torch.ones(2, 1, 4, 4))
        >>> mean, spread = statistics.result(Normalization.GLOBAL)
        >>> float(mean), float(spread)
        (2.0, 1.0)

    """

    def __init__(self) -> None:
        self.count = torch.zeros((), dtype=torch.float64)
        self.total: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None

    def update(self, maps: torch.Tensor) -> None:
        """Add the maps ``(B, M, H, W)`` of a batch of normal images."""
        maps = maps.detach().to(torch.float64)
        total, squares = maps.sum(dim=0, keepdim=True), maps.pow(2).sum(dim=0, keepdim=True)
        if self.total is None or self.squares is None:
            self.total, self.squares = total, squares
        else:
            self.total, self.squares = self.total + total, self.squares + squares
        self.count = self.count + maps.shape[0]

    def __len__(self) -> int:
        """Number of maps accumulated."""
        return int(self.count)

    def totals(self, shape: tuple[int, int, int]) -> torch.Tensor:
        """``[count, per-pixel sums, per-pixel sums of squares]`` of maps ``(M, H, W)`` as one tensor.

        Zeros when nothing was accumulated, so that every process contributes a tensor of one shape
        when they are summed over processes.
        """
        if self.total is None or self.squares is None:
            zeros = torch.zeros(1, *shape, dtype=torch.float64)
            return torch.cat([self.count.reshape(1), zeros.flatten(), zeros.flatten()])
        return torch.cat([self.count.reshape(1), self.total.flatten(), self.squares.flatten()])

    def load_totals(self, totals: torch.Tensor, shape: tuple[int, int, int]) -> None:
        """Replace the accumulators by :meth:`totals` of maps ``(M, H, W)`` (e.g. summed over processes)."""
        size = shape[0] * shape[1] * shape[2]
        totals = totals.to(torch.float64)
        self.count = totals[0]
        self.total = totals[1 : 1 + size].reshape(1, *shape)
        self.squares = totals[1 + size :].reshape(1, *shape)

    def result(
        self, normalization: Normalization | str, floor: float = SPREAD_FLOOR
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and spread ``(1, M, H, W)`` (``"pixel"``) or ``(1, M, 1, 1)`` (``"global"``), float32.

        The per-pixel spread gets ``floor`` times the whole map's spread added, so that a pixel whose
        few held-out values happened to agree does not turn noise into a large normalised error.

        Args:
            normalization: ``"pixel"`` or ``"global"``.
            floor: Share of the whole map's spread added to every pixel's spread (``"pixel"`` only).

        Returns:
            ``(mean, spread)``.

        """
        if self.total is None or self.squares is None or self.count < 2:
            msg = f"Normalising the anomaly map needs at least 2 held-out normal images, got {len(self)}."
            raise ValueError(msg)
        pixels = self.total[0, 0].numel()
        global_mean = self.total.sum(dim=(2, 3), keepdim=True) / (self.count * pixels)
        global_var = self.squares.sum(dim=(2, 3), keepdim=True) / (self.count * pixels) - global_mean.pow(2)
        global_spread = global_var.clamp_min(0).sqrt().clamp_min(1e-12)
        if Normalization(normalization) is Normalization.GLOBAL:
            return global_mean.float(), global_spread.float()
        mean = self.total / self.count
        spread = (self.squares / self.count - mean.pow(2)).clamp_min(0).sqrt() + floor * global_spread
        return mean.float(), spread.float()


class AnomalyMapGenerator(nn.Module):
    """Build the anomaly map and the image score.

    Args:
        measure: Error measure, see :class:`ErrorMeasure`.
        normalization: Statistics of normal images that put the map on their scale, see
            :class:`Normalization`. Until :meth:`set_statistics` is called they are 0 and 1 (no change).
        latent_weight: Share of the discriminator's latent error in the map (DAAD+), in ``[0, 1]``:
            ``(1 - w) * reconstruction error + w * latent error``, each on its own normal scale when
            ``normalization`` is not ``"none"``. 0 gives DAAD.
        sigma: Standard deviation of the Gaussian smoothing, in pixels; 0 disables it. The image score is
            taken from this map.
        map_sigma: Smoothing of the anomaly map that is returned for localisation (:meth:`localize`), at
            least ``sigma``; ``None``: ``sigma``. A wider smoothing fills a defect's area more evenly (pixel
            AUROC, PRO) while the image score keeps the sharper map (a small defect is not diluted).
        top_fraction: Fraction of the highest map pixels averaged into the image score.

    Example:
        >>> generator = AnomalyMapGenerator(measure="ssim", normalization="global")
        >>> generator.score(torch.zeros(3, 1, 8, 8)).shape
        torch.Size([3])

    """

    def __init__(
        self,
        measure: ErrorMeasure | str = ErrorMeasure.L2,
        normalization: Normalization | str = Normalization.NONE,
        latent_weight: float = 0.0,
        sigma: float = 4.0,
        map_sigma: float | None = None,
        top_fraction: float = 0.01,
    ) -> None:
        super().__init__()
        if not 0.0 < top_fraction <= 1.0:
            msg = f"top_fraction must lie in (0, 1], got {top_fraction}."
            raise ValueError(msg)
        if not 0.0 <= latent_weight <= 1.0:
            msg = f"latent_weight must lie in [0, 1], got {latent_weight}."
            raise ValueError(msg)
        self.measure = ErrorMeasure(measure)
        self.normalization = Normalization(normalization)
        self.latent_weight = latent_weight
        self.top_fraction = top_fraction
        self.sigma = sigma
        self.blur: nn.Module = SeparableGaussianBlur(sigma) if sigma > 0 else nn.Identity()
        self.set_map_sigma(map_sigma)
        # "auto" computes every measure; ``measure_weights`` (chosen from normal images) mixes them.
        self.measures = MEASURES if self.measure is ErrorMeasure.AUTO else (self.measure,)
        self.errors = nn.ModuleList(
            {
                ErrorMeasure.L2: nn.Identity(),
                ErrorMeasure.SSIM: StructuralError(),
                ErrorMeasure.MSGMS: GradientSimilarityError(),
            }[kind]
            for kind in self.measures
        )
        count = len(self.measures)
        self.register_buffer("measure_weights", torch.full((count,), 1.0 / count))
        self.register_buffer("normal_mean", torch.zeros(1, count, 1, 1))
        self.register_buffer("normal_spread", torch.ones(1, count, 1, 1))
        self.register_buffer("latent_mean", torch.zeros(1, 1, 1, 1))
        self.register_buffer("latent_spread", torch.ones(1, 1, 1, 1))

    @property
    def needs_statistics(self) -> bool:
        """Whether held-out normal images are needed: to normalise the map, or to choose the ``"auto"`` measure."""
        return self.normalization is not Normalization.NONE or self.measure is ErrorMeasure.AUTO

    @property
    def chooses(self) -> bool:
        """Whether the measure or the normalisation is chosen automatically (see :mod:`.map_choice`)."""
        return self.normalization is Normalization.AUTO or self.measure is ErrorMeasure.AUTO

    def reconstruction_error(self, images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        """The smoothed reconstruction error maps ``(B, M, H, W)`` of the ``M`` measures, before normalisation."""
        maps = [
            squared_error(images, reconstructions) if kind is ErrorMeasure.L2 else error(images, reconstructions)
            for kind, error in zip(self.measures, self.errors, strict=True)
        ]
        return self.blur(maps[0] if len(maps) == 1 else torch.cat(maps, dim=1))

    def latent_error(self, latent: torch.Tensor, latent_reconstructed: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """The smoothed discriminator-feature error ``(B, 1, H, W)`` at the image ``size``, before normalisation."""
        error = (latent - latent_reconstructed).pow(2).mean(dim=1, keepdim=True)
        return self.blur(F.interpolate(error, size=size, mode="bilinear", align_corners=False))

    def set_measure_weights(self, weights: torch.Tensor) -> None:
        """Store the weights ``(M,)`` that mix the normalised measures (with ``"auto"``; one-hot: a choice)."""
        self.measure_weights = weights.detach().to(self.measure_weights)

    def set_statistics(self, name: str, mean: torch.Tensor, spread: torch.Tensor) -> None:
        """Store the normal statistics ``(1, M, h, w)`` of ``"normal"`` (reconstruction) or ``"latent"`` error."""
        if name not in {"normal", "latent"}:
            msg = f"Statistics are kept for 'normal' or 'latent' errors, not {name!r}."
            raise ValueError(msg)
        setattr(self, f"{name}_mean", mean.detach().to(self.normal_mean))
        setattr(self, f"{name}_spread", spread.detach().to(self.normal_mean))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Adopt the shape of stored statistics (per pixel, or one value) before loading them."""
        for name in ("normal_mean", "normal_spread", "latent_mean", "latent_spread", "measure_weights"):
            stored = state_dict.get(prefix + name)
            if stored is not None and stored.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(stored))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def normalize(self, error: torch.Tensor, name: str) -> torch.Tensor:
        """Put error maps ``(B, M, H, W)`` on the scale of normal images (unchanged for ``"none"``)."""
        if self.normalization is Normalization.NONE:
            return error
        size = error.shape[-2:]
        mean = F.interpolate(getattr(self, f"{name}_mean"), size=size, mode="bilinear", align_corners=False)
        spread = F.interpolate(getattr(self, f"{name}_spread"), size=size, mode="bilinear", align_corners=False)
        return (error - mean) / spread

    def forward(
        self,
        images: torch.Tensor,
        reconstructions: torch.Tensor,
        latent: torch.Tensor | None = None,
        latent_reconstructed: torch.Tensor | None = None,
        defects: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the anomaly map at the image resolution.

        Args:
            images: Pre-processed images ``(B, C, H, W)``.
            reconstructions: Their reconstructions ``(B, C, H, W)``.
            latent: Discriminator features of the images ``(B, D, h, w)``; needed when
                ``latent_weight > 0``.
            latent_reconstructed: Discriminator features of the reconstructions ``(B, D, h, w)``.
            defects: Defect probabilities ``(B, 1, H, W)`` of a :class:`~.segmentation.DefectSegmenter`; when
                given they replace the reconstruction error (smoothed, not normalised).

        Returns:
            Anomaly map ``(B, 1, H, W)``.

        """
        if defects is not None:
            anomaly_map = self.blur(defects)
        else:
            anomaly_map = self.mix(self.normalize(self.reconstruction_error(images, reconstructions), "normal"))
        if self.latent_weight > 0:
            if latent is None or latent_reconstructed is None:
                msg = "latent_weight > 0 needs the discriminator features of images and reconstructions."
                raise ValueError(msg)
            latent_map = self.normalize(self.latent_error(latent, latent_reconstructed, images.shape[-2:]), "latent")
            anomaly_map = (1 - self.latent_weight) * anomaly_map + self.latent_weight * latent_map
        return anomaly_map

    def set_map_sigma(self, map_sigma: float | None) -> None:
        """Set the smoothing of the map for localisation (``None``: ``sigma``, one smoothing for both)."""
        map_sigma = self.sigma if map_sigma is None else map_sigma
        if map_sigma < self.sigma:
            msg = f"map_sigma ({map_sigma}) must be at least sigma ({self.sigma}): the map is smoothed further."
            raise ValueError(msg)
        self.map_sigma = map_sigma
        # Two Gaussians compose into one whose variance is the sum: sigma^2 + extra^2 = map_sigma^2.
        extra = math.sqrt(map_sigma**2 - self.sigma**2)
        self.localize_blur: nn.Module = SeparableGaussianBlur(extra) if extra > 0 else nn.Identity()

    def localize(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """The map for localisation: :meth:`forward`'s map ``(B, 1, H, W)`` smoothed on to ``map_sigma``."""
        return self.localize_blur(anomaly_map)

    def mix(self, maps: torch.Tensor) -> torch.Tensor:
        """Mix normalised maps ``(B, M, H, W)`` of the measures with ``measure_weights`` into ``(B, 1, H, W)``."""
        if maps.shape[1] == 1:
            return maps
        return (maps * self.measure_weights.reshape(1, -1, 1, 1)).sum(dim=1, keepdim=True)

    def score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Image score: the mean of the highest ``top_fraction`` of the map's pixels.

        Averaging the top of the map is steadier than its maximum (one noisy pixel) and, unlike
        the plain mean, is not diluted by a large normal area around a small defect.

        Args:
            anomaly_map: Anomaly maps ``(B, 1, H, W)``.

        Returns:
            Scores ``(B,)``.
        """
        pixels = anomaly_map.flatten(1)
        count = max(1, int(pixels.shape[1] * self.top_fraction))
        return pixels.topk(count, dim=1).values.mean(dim=1)
