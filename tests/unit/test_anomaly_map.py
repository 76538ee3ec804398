"""Error measures, normalisation with held-out normal images, and their buffers."""

import copy

import numpy as np
import pytest
import torch
from kornia.metrics import ssim as kornia_ssim
from scipy import ndimage

from anomalib_divass.models.divide_assemble.anomaly_map import (
    AnomalyMapGenerator,
    ErrorMeasure,
    GradientSimilarityError,
    Normalization,
    NormalStatistics,
    StructuralError,
)
from anomalib_divass.models.divide_assemble.discriminator import Discriminator
from anomalib_divass.models.divide_assemble.holdout import NormalStatisticsCollector, heldout_mask
from anomalib_divass.models.divide_assemble.torch_model import DivideAssembleModel, MemoryAutoencoder


@pytest.mark.parametrize("measure", list(ErrorMeasure))
@pytest.mark.parametrize("channels", [1, 3])
def test_maps_of_identical_images_are_zero(measure: ErrorMeasure, channels: int) -> None:
    images = torch.rand(2, channels, 48, 40)
    generator = AnomalyMapGenerator(measure=measure, sigma=2.0)
    assert torch.equal(generator(images, images.clone()), torch.zeros(2, 1, 48, 40))


@pytest.mark.parametrize("measure", list(ErrorMeasure))
def test_map_peaks_where_the_images_differ(measure: ErrorMeasure) -> None:
    images = torch.full((1, 3, 64, 64), 0.5) + 0.05 * torch.rand(1, 3, 64, 64)
    reconstructions = images.clone()
    reconstructions[..., 40:48, 8:16] = 0.0
    anomaly_map = AnomalyMapGenerator(measure=measure, sigma=1.0)(images, reconstructions)
    row, column = divmod(int(anomaly_map.flatten().argmax()), 64)
    assert 36 <= row < 52
    assert 4 <= column < 20


def test_ssim_error_matches_kornia_on_a_known_pair() -> None:
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    reconstructions = (images + 0.2 * torch.randn_like(images)).clamp(0, 1)
    ours = StructuralError(sigma=1.5)(images, reconstructions)
    # kornia's window: 13 taps with sigma 1.5 is our radius int(4 * 1.5 + 0.5) = 6; both pad by reflection.
    reference = 1 - kornia_ssim(images, reconstructions, window_size=13, max_val=1.0).mean(dim=1, keepdim=True)
    assert torch.allclose(ours, reference, atol=2e-4)


def _msgms_reference(image: np.ndarray, reconstruction: np.ndarray, scales: int = 4, c: float = 0.0026) -> np.ndarray:
    """Independent numpy/scipy MSGMS error of two grey images ``(H, W)``."""
    prewitt = np.array([[1.0, 0.0, -1.0]] * 3) / 3.0
    height, width = image.shape
    total = np.zeros_like(image)
    x, y = image, reconstruction
    for scale in range(scales):
        if scale > 0:
            x = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).mean(axis=(1, 3))
            y = y.reshape(y.shape[0] // 2, 2, y.shape[1] // 2, 2).mean(axis=(1, 3))

        def magnitude(a: np.ndarray) -> np.ndarray:
            # correlate (not convolve) like torch's conv2d; edge padding like "replicate"
            gx = ndimage.correlate(a, prewitt, mode="nearest")
            gy = ndimage.correlate(a, prewitt.T, mode="nearest")
            return np.sqrt(gx**2 + gy**2 + 1e-12)

        gx, gy = magnitude(x), magnitude(y)
        error = 1 - (2 * gx * gy + c) / (gx**2 + gy**2 + c)
        if scale > 0:
            error = (
                torch.nn.functional.interpolate(
                    torch.from_numpy(error)[None, None], size=(height, width), mode="bilinear", align_corners=False
                )[0, 0]
                .double()
                .numpy()
            )
        total += error
    return total / scales


def test_msgms_error_matches_an_independent_computation() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((64, 64))
    reconstruction = np.clip(image + 0.3 * rng.standard_normal((64, 64)), 0, 1)
    reconstruction[20:30, 20:30] = 0.5  # a flat patch: no gradient where the image has some
    ours = GradientSimilarityError()(torch.from_numpy(image)[None, None], torch.from_numpy(reconstruction)[None, None])
    assert np.allclose(ours[0, 0].numpy(), _msgms_reference(image, reconstruction), atol=1e-6)


def test_colour_images_are_compared_in_grey_by_msgms() -> None:
    grey = torch.rand(1, 1, 32, 32)
    error = GradientSimilarityError()
    colour = error(grey.expand(-1, 3, -1, -1), grey.flip(-1).expand(-1, 3, -1, -1))
    assert torch.allclose(colour, error(grey, grey.flip(-1)))


def test_normal_statistics_match_numpy() -> None:
    maps = torch.rand(10, 1, 8, 8)
    statistics = NormalStatistics()
    statistics.update(maps[:4])
    statistics.update(maps[4:])
    mean, spread = statistics.result(Normalization.PIXEL)
    values = maps.double().numpy()
    assert np.allclose(mean.numpy(), values.mean(axis=0, keepdims=True), atol=1e-6)
    expected = values.std(axis=0, keepdims=True) + 0.1 * values.std()
    assert np.allclose(spread.numpy(), expected, atol=1e-5)
    global_mean, global_spread = statistics.result(Normalization.GLOBAL)
    assert global_mean.shape == (1, 1, 1, 1)
    assert float(global_spread) == pytest.approx(values.std(), rel=1e-5)


def test_pixel_normalisation_removes_the_normal_pattern() -> None:
    """A pixel that is always badly rebuilt (a rim) stops dominating once normalised."""
    generator = AnomalyMapGenerator(normalization="pixel", sigma=0.0)
    rim = torch.zeros(1, 1, 16, 16)
    rim[..., 0, :] = 1.0
    normal_errors = rim + 0.01 * torch.rand(20, 1, 16, 16)
    statistics = NormalStatistics()
    statistics.update(normal_errors)
    generator.set_statistics("normal", *statistics.result("pixel"))
    images = torch.zeros(1, 3, 16, 16)
    reconstructions = torch.zeros(1, 3, 16, 16)
    reconstructions[..., 0, :] = 1.0  # the usual rim error ...
    reconstructions[..., 8, 8] = 0.5  # ... and a small defect
    anomaly_map = generator(images, reconstructions)
    assert divmod(int(anomaly_map.flatten().argmax()), 16) == (8, 8)


def test_statistics_buffers_travel_with_the_state_dict_whatever_their_shape() -> None:
    generator = AnomalyMapGenerator(normalization="pixel")
    generator.set_statistics("normal", torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32) + 1)
    generator.set_statistics("latent", torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32) + 1)
    fresh = AnomalyMapGenerator(normalization="pixel")
    assert fresh.normal_mean.shape == (1, 1, 1, 1)
    fresh.load_state_dict(generator.state_dict())
    assert torch.equal(fresh.normal_mean, generator.normal_mean)
    assert torch.equal(fresh.latent_spread, generator.latent_spread)


def test_pixel_statistics_follow_another_input_size() -> None:
    generator = AnomalyMapGenerator(normalization="pixel", sigma=0.0)
    generator.set_statistics("normal", torch.full((1, 1, 32, 32), 0.25), torch.full((1, 1, 32, 32), 0.5))
    images = torch.zeros(1, 3, 64, 48)
    assert torch.allclose(generator(images, images), torch.full((1, 1, 64, 48), -0.5))


def test_heldout_images_are_chosen_by_file_name() -> None:
    names = [f"train/good/{index:03d}.png" for index in range(200)]
    mask = heldout_mask(names)
    assert 0.1 < mask.float().mean() < 0.3
    assert torch.equal(mask, heldout_mask([f"/elsewhere/{name}" for name in names]))  # name only, not folder
    assert heldout_mask(None, batch_size=10).tolist() == [False] * 4 + [True] + [False] * 4 + [True]


def test_collector_stores_statistics_of_the_current_weights() -> None:
    torch.manual_seed(0)
    model = DivideAssembleModel(
        MemoryAutoencoder(channels=(8, 16), granularity=(2, 1), num_items=4),
        Discriminator(channels=(8, 16)),
        AnomalyMapGenerator(normalization="pixel", sigma=1.0),
    ).train()
    collector = NormalStatisticsCollector(model)
    images = torch.rand(6, 3, 32, 32)
    collector.add(images[:3])
    collector.add(images[3:])
    assert model.training  # measured in eval mode, given back in training mode
    assert collector.finish() == 6
    model.eval()
    with torch.no_grad():
        raw = model.anomaly_map.reconstruction_error(images, model.autoencoder(images).image)
    assert torch.allclose(model.anomaly_map.normal_mean, raw.mean(dim=0, keepdim=True), atol=1e-6)
    assert model.anomaly_map.latent_mean.shape == (1, 1, 32, 32)
    # normalised maps of the held-out images average to zero per pixel
    assert torch.allclose(model(images).anomaly_map.mean(dim=0), torch.zeros(1, 32, 32), atol=1e-4)


def test_auroc_matches_sklearn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    from anomalib_divass.models.divide_assemble.map_choice import auroc

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 300).astype(float)  # many ties
    labels = rng.integers(0, 2, 300)
    assert auroc(torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(roc_auc_score(labels, scores))


def test_auto_map_stores_the_chosen_candidate() -> None:
    from anomalib_divass.models.divide_assemble.map_choice import map_candidates

    torch.manual_seed(0)
    model = DivideAssembleModel(
        MemoryAutoencoder(channels=(8, 16), granularity=(2, 1), num_items=4),
        Discriminator(channels=(8, 16)),
        AnomalyMapGenerator(measure="auto", normalization="auto", sigma=1.0),
    )
    generator = model.anomaly_map
    assert generator.measures == (ErrorMeasure.L2, ErrorMeasure.SSIM, ErrorMeasure.MSGMS)
    candidates = map_candidates(generator.measure, generator.normalization)
    # L2 alone, MSGMS alone and the equal mix (SSIM alone only when asked for, e.g. by the quality probe).
    assert [candidate.name for candidate in candidates] == [
        f"{label}/{norm}" for norm in ("global", "pixel") for label in ("l2", "msgms", "mix")
    ]
    every = map_candidates(generator.measure, generator.normalization, alone=generator.measures)
    assert [candidate.name for candidate in every] == [
        f"{label}/{norm}" for norm in ("global", "pixel") for label in ("l2", "ssim", "msgms", "mix")
    ]
    collector = NormalStatisticsCollector(model)
    collector.add(torch.rand(8, 3, 32, 32))
    assert collector.finish() == 8
    choice = collector.choice
    assert choice is not None
    assert len(choice.criteria) == len(candidates)
    assert choice.best.name in choice.reason
    assert torch.equal(generator.measure_weights, torch.tensor(choice.best.weights))
    expected_shape = (1, 3, 1, 1) if choice.best.normalization is Normalization.GLOBAL else (1, 3, 32, 32)
    assert generator.normal_mean.shape == expected_shape
    images = torch.rand(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        reconstructions = model.autoencoder(images).image
        maps = generator.normalize(generator.reconstruction_error(images, reconstructions), "normal")
        weights = torch.tensor(choice.best.weights).reshape(1, -1, 1, 1)
        assert torch.allclose(model(images).anomaly_map, (maps * weights).sum(dim=1, keepdim=True), atol=1e-6)


def test_choice_is_judged_on_images_its_statistics_did_not_see() -> None:
    """Statistics come from one half of the held-out images, synthetic defects go on the other half."""
    from anomalib_divass.models.divide_assemble.map_choice import candidate_criteria, map_candidates

    generator = AnomalyMapGenerator(measure="l2", normalization="auto", sigma=0.0)
    seen: list[int] = []

    def identity(images: torch.Tensor) -> torch.Tensor:
        seen.append(len(images))
        return images * 0.9

    candidates = map_candidates(generator.measure, generator.normalization)
    criteria = candidate_criteria(generator, identity, torch.rand(10, 3, 32, 32), candidates)
    assert seen == [5, 5, 5]  # reference half, clean judged half, defective judged half
    assert criteria.shape == (2,)
    assert ((criteria >= 0) & (criteria <= 1)).all()


def test_statistics_and_map_choice_are_summed_over_processes() -> None:
    # Two "processes" each hold out half of the images; reduce adds the other process's totals, as DDP's
    # all-reduce does. The stored statistics are those of all the images, and the choice sees both votes.
    torch.manual_seed(0)
    model = DivideAssembleModel(
        MemoryAutoencoder(channels=(8, 16), granularity=(2, 1), num_items=4),
        Discriminator(channels=(8, 16)),
        AnomalyMapGenerator(measure="auto", normalization="pixel", sigma=1.0),
    )
    other = copy.deepcopy(model)
    images = torch.rand(12, 3, 32, 32)
    sent: list[torch.Tensor] = []
    collector = NormalStatisticsCollector(other)
    collector.add(images[6:])
    collector.finish(reduce=lambda totals: sent.append(totals.clone()) or totals)
    assert len(sent) == 3  # normal and latent statistics, then the candidates' criteria
    local: list[torch.Tensor] = []

    def all_reduce(totals: torch.Tensor) -> torch.Tensor:
        local.append(totals.clone())
        return totals + sent[len(local) - 1]

    collector = NormalStatisticsCollector(model)
    collector.add(images[:6])
    assert collector.finish(reduce=all_reduce) == 12
    model.eval()
    with torch.no_grad():
        raw = model.anomaly_map.reconstruction_error(images, model.autoencoder(images).image)
    assert torch.allclose(model.anomaly_map.normal_mean, raw.mean(dim=0, keepdim=True), atol=1e-5)
    assert collector.choice is not None
    assert torch.allclose(torch.as_tensor(collector.choice.criteria), local[2] + sent[2])
