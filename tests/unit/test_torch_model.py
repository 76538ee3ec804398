"""The network: shapes, no bypass around the memories, granularity checks, scoring."""

import pytest
import torch
from anomalib.data import InferenceBatch
from anomalib.models.components import GaussianBlur2d

from anomalib_divass.models.divide_assemble.anomaly_map import AnomalyMapGenerator, SeparableGaussianBlur
from anomalib_divass.models.divide_assemble.discriminator import Discriminator
from anomalib_divass.models.divide_assemble.memory import MemoryReadout
from anomalib_divass.models.divide_assemble.torch_model import (
    DivideAssembleModel,
    MemoryAutoencoder,
    check_input_size,
    input_size_multiple,
)

SMALL = {"channels": (8, 16, 16), "granularity": (4, 2, 1), "num_items": 12}


def small_model(latent_weight: float = 0.0, **autoencoder: object) -> DivideAssembleModel:
    return DivideAssembleModel(
        MemoryAutoencoder(**{**SMALL, **autoencoder}),
        Discriminator(channels=(8, 16)),
        AnomalyMapGenerator(latent_weight=latent_weight),
    )


class ConstantMemory(torch.nn.Module):
    """Stands in for a BlockMemory and ignores its input."""

    def forward(self, features: torch.Tensor) -> MemoryReadout:
        torch.manual_seed(123)
        constant = torch.randn(features.shape[1:]).expand_as(features)
        return MemoryReadout(constant, torch.ones(1, 1), features.new_zeros(()))


def test_train_and_eval_outputs() -> None:
    model = small_model()
    images = torch.rand(2, 3, 32, 32)
    reconstruction = model.train()(images)
    assert reconstruction.image.shape == images.shape
    assert reconstruction.image.min() >= 0
    assert reconstruction.image.max() <= 1
    assert reconstruction.entropy.ndim == 0
    predictions = model.eval()(images)
    assert isinstance(predictions, InferenceBatch)
    assert predictions.pred_score.shape == (2,)
    assert predictions.anomaly_map.shape == (2, 1, 32, 32)


def test_decoder_sees_no_raw_encoder_feature() -> None:
    """With every memory replaced by a constant, the reconstruction ignores the input."""
    model = small_model().eval()
    scales = range(len(SMALL["granularity"]))
    model.autoencoder.memories = torch.nn.ModuleDict({str(i): ConstantMemory() for i in scales})
    first = model.autoencoder(torch.rand(2, 3, 32, 32)).image
    second = model.autoencoder(torch.rand(2, 3, 32, 32) * 5).image
    assert torch.allclose(first, second)


def test_vanilla_autoencoder_depends_on_input() -> None:
    model = small_model(use_memory=False).eval()
    first = model.autoencoder(torch.rand(1, 3, 32, 32)).image
    second = model.autoencoder(torch.rand(1, 3, 32, 32)).image
    assert not torch.allclose(first, second)
    assert len(model.autoencoder.memories) == 0
    daad = small_model().eval()  # the same network otherwise
    assert [p.shape for p in model.autoencoder.decoder.parameters()] == [
        p.shape for p in daad.autoencoder.decoder.parameters()
    ]


def test_gradients_reach_encoder_memories_and_decoder() -> None:
    model = small_model().train()
    images = torch.rand(2, 3, 32, 32)
    reconstruction = model(images)
    ((reconstruction.image - images).abs().mean() + reconstruction.entropy).backward()
    for name, parameter in model.autoencoder.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_one_channel_input_is_repeated() -> None:
    model = small_model().eval()
    gray = torch.rand(1, 1, 32, 32)
    assert torch.allclose(model(gray).pred_score, model(gray.expand(-1, 3, -1, -1)).pred_score)


def test_input_size_must_fit_strides_and_blocks() -> None:
    assert input_size_multiple((16, 8, 4, 2, 1)) == 32
    assert input_size_multiple((4, 2, 1)) == 8
    check_input_size((256, 256), (16, 8, 4, 2, 1))
    with pytest.raises(ValueError, match=r"250 x 250 does not fit.*multiple of 32.*256"):
        check_input_size((250, 250), (16, 8, 4, 2, 1))
    model = small_model()
    with pytest.raises(ValueError, match="multiple of 8"):
        model(torch.rand(1, 3, 36, 36))


def test_granularity_needs_one_block_size_per_scale() -> None:
    with pytest.raises(ValueError, match="one block size per scale"):
        MemoryAutoencoder(channels=(8, 16), granularity=(4, 2, 1))


def test_latent_term_changes_the_map() -> None:
    torch.manual_seed(0)
    daad = small_model(latent_weight=0.0).eval()
    daad_plus = small_model(latent_weight=0.5).eval()
    daad_plus.load_state_dict(daad.state_dict())
    images = torch.rand(2, 3, 32, 32)
    reconstruction_map = daad(images).anomaly_map
    with torch.no_grad():
        reconstructed = daad.autoencoder(images).image
        latent_map = daad_plus.anomaly_map.latent_error(
            daad.discriminator(images)[1], daad.discriminator(reconstructed)[1], images.shape[-2:]
        )
    assert not torch.allclose(daad_plus(images).anomaly_map, reconstruction_map)
    assert torch.allclose(daad_plus(images).anomaly_map, 0.5 * reconstruction_map + 0.5 * latent_map, atol=1e-6)


def test_separable_blur_equals_anomalib_gaussian_blur() -> None:
    maps = torch.rand(2, 1, 40, 56)
    reference = GaussianBlur2d(kernel_size=33, sigma=4.0, channels=1)(maps)
    assert torch.allclose(SeparableGaussianBlur(4.0)(maps), reference, atol=1e-5)


def test_map_is_error_where_images_differ() -> None:
    images = torch.zeros(1, 3, 32, 32)
    reconstructions = images.clone()
    reconstructions[..., 20:24, 4:8] = 1.0
    anomaly_map = AnomalyMapGenerator(sigma=1.0)(images, reconstructions)
    peak = divmod(int(anomaly_map.flatten().argmax()), 32)
    assert 20 <= peak[0] < 24
    assert 4 <= peak[1] < 8
    assert AnomalyMapGenerator(top_fraction=1 / 1024).score(anomaly_map).item() == pytest.approx(
        anomaly_map.max().item()
    )
    assert AnomalyMapGenerator(top_fraction=1.0).score(anomaly_map).item() == pytest.approx(anomaly_map.mean().item())
    top = AnomalyMapGenerator(top_fraction=0.1).score(anomaly_map).item()
    assert anomaly_map.mean().item() < top < anomaly_map.max().item()


def test_localized_map_is_the_score_map_smoothed_on_to_map_sigma() -> None:
    maps = torch.rand(2, 1, 96, 80)
    generator = AnomalyMapGenerator(sigma=4.0, map_sigma=8.0)
    once = SeparableGaussianBlur(8.0)(maps)
    twice = generator.localize(SeparableGaussianBlur(4.0)(maps))
    # Gaussians compose (variances add); away from the reflected borders the two agree.
    assert torch.allclose(twice[..., 32:-32, 32:-32], once[..., 32:-32, 32:-32], atol=1e-4)
    assert torch.equal(AnomalyMapGenerator(sigma=4.0).localize(maps), maps)
    with pytest.raises(ValueError, match="map_sigma"):
        AnomalyMapGenerator(sigma=4.0, map_sigma=2.0)


def test_score_comes_from_the_sharper_map_and_the_map_from_the_wider_one() -> None:
    torch.manual_seed(0)
    sharp, wide = (
        DivideAssembleModel(MemoryAutoencoder(**SMALL), Discriminator(channels=(8, 16)), generator).eval()
        for generator in (AnomalyMapGenerator(sigma=1.0), AnomalyMapGenerator(sigma=1.0, map_sigma=3.0))
    )
    wide.load_state_dict(sharp.state_dict())
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        reference, output = sharp(images), wide(images)
    assert torch.allclose(output.pred_score, reference.pred_score)
    assert torch.allclose(output.anomaly_map, wide.anomaly_map.localize(reference.anomaly_map))
    assert output.anomaly_map.std() < reference.anomaly_map.std()


def test_smoothing_wider_than_a_small_map_is_cut_to_the_map_and_keeps_its_mean() -> None:
    maps = torch.rand(1, 1, 12, 20)
    smoothed = SeparableGaussianBlur(8.0)(maps)  # radius 32: longer than both sides
    assert smoothed.shape == maps.shape
    assert torch.isfinite(smoothed).all()
    assert smoothed.std() < maps.std()
    assert torch.allclose(SeparableGaussianBlur(8.0)(torch.ones(1, 1, 12, 20)), torch.ones(1, 1, 12, 20))
