"""The reconstruction panel: anomalib's panel plus one tile, fed by the scoring forward without a second one."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from anomalib.data import ImageBatch, ImageItem
from anomalib.visualization.image.item_visualizer import visualize_image_item

from anomalib_divass import DivideAssemble
from anomalib_divass.models.divide_assemble.discriminator import Discriminator
from anomalib_divass.models.divide_assemble.torch_model import DivideAssembleModel, MemoryAutoencoder
from anomalib_divass.models.divide_assemble.visualizer import (
    ReconstructionPanels,
    ReconstructionVisualizer,
    attach_reconstruction,
    reconstruction_of,
    score_with_reconstruction,
)

SIZE = 32
COLOUR = (0.2, 0.6, 0.9)


def item() -> ImageItem:
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[8:16, 8:16] = True
    return ImageItem(
        image=torch.rand(3, SIZE, SIZE, generator=generator),
        gt_mask=mask,
        anomaly_map=torch.rand(1, SIZE, SIZE, generator=generator),
        pred_mask=mask,
        pred_score=torch.tensor(0.7),
        pred_label=torch.tensor(True),
    )


def reconstruction() -> torch.Tensor:
    return torch.tensor(COLOUR).view(3, 1, 1).expand(3, SIZE, SIZE).clone()


def tiles(picture: object, width: int = 256) -> list[np.ndarray]:
    array = np.asarray(picture)
    return [array[:, left : left + width] for left in range(0, array.shape[1], width)]


def anomalib_panel(visualizer: ReconstructionPanels, sample: ImageItem) -> object:
    return visualize_image_item(
        sample,
        fields=visualizer.fields,
        overlay_fields=visualizer.overlay_fields,
        field_size=visualizer.field_size,
        fields_config=visualizer.fields_config,
        overlay_fields_config=visualizer.overlay_fields_config,
        text_config=visualizer.text_config,
    )


def test_panel_is_anomalibs_with_the_reconstruction_after_the_image() -> None:
    visualizer = ReconstructionVisualizer()
    sample = item()
    plain = anomalib_panel(visualizer, sample)
    panel = visualizer.panel(sample, reconstruction())
    assert panel.size == (plain.width + 256, 256)
    expected = tiles(plain)
    got = tiles(panel)
    assert len(got) == 5  # image, reconstruction, ground truth, map overlay, predicted-mask overlay
    assert np.array_equal(got[0], expected[0])
    for ours, theirs in zip(got[2:], expected[1:], strict=True):
        assert np.array_equal(ours, theirs)
    corner = got[1][128:, 128:].reshape(-1, 3).mean(axis=0)  # below the title: the reconstruction's colour
    assert np.allclose(corner, np.array(COLOUR) * 255, atol=2)
    assert got[1][:40, :].std() > 5  # the "Reconstruction" title


def test_without_reconstruction_the_panel_is_exactly_anomalibs() -> None:
    visualizer = ReconstructionVisualizer()
    sample = item()
    assert np.array_equal(np.asarray(visualizer.panel(sample)), np.asarray(anomalib_panel(visualizer, sample)))


def test_reconstruction_follows_the_image_among_the_configured_fields() -> None:
    visualizer = ReconstructionPanels(fields=["gt_mask", "image"], text_config={"enable": False})
    got = tiles(visualizer.panel(item(), reconstruction()))
    assert len(got) == 5  # ground truth, image, reconstruction, the two overlays
    assert np.allclose(got[2].reshape(-1, 3).mean(axis=0), np.array(COLOUR) * 255, atol=2)  # no title either
    sample = item()
    sample.gt_mask = None  # a field anomalib cannot draw is left out: the reconstruction moves up
    got = tiles(visualizer.panel(sample, reconstruction()))
    assert len(got) == 4
    assert np.allclose(got[1].reshape(-1, 3).mean(axis=0), np.array(COLOUR) * 255, atol=2)


def small_model() -> DivideAssembleModel:
    torch.manual_seed(0)
    autoencoder = MemoryAutoencoder(channels=(8, 16), granularity=(2, 1), num_items=10)
    return DivideAssembleModel(autoencoder, Discriminator(channels=(8, 16))).eval()


def test_scoring_keeps_the_reconstruction_of_its_one_forward() -> None:
    model = small_model()
    images = torch.rand(2, 3, SIZE, SIZE)
    calls = []
    model.autoencoder.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        expected = model(images)
        reference = model.autoencoder(images).image
        calls.clear()
        batch = score_with_reconstruction(model, ImageBatch(image=images.clone()))
    assert len(calls) == 1  # no second forward
    assert torch.equal(batch.pred_score, expected.pred_score)
    assert torch.equal(batch.anomaly_map, expected.anomaly_map.reshape(batch.anomaly_map.shape))
    assert torch.equal(reconstruction_of(batch), reference)
    assert len(model.autoencoder._forward_hooks) == 1  # the test's counter only: the keeping hook is gone

    plain = score_with_reconstruction(model, ImageBatch(image=images.clone()), keep=False)
    assert reconstruction_of(plain) is None
    assert torch.equal(plain.pred_score, expected.pred_score)


def test_reconstruction_survives_gathering_to_process_zero() -> None:
    batch = ImageBatch(image=torch.rand(2, 3, 8, 8))
    attach_reconstruction(batch, torch.ones(2, 3, 8, 8))
    assert torch.equal(reconstruction_of(pickle.loads(pickle.dumps(batch))), torch.ones(2, 3, 8, 8))


def test_switch_is_validated_and_the_visualizer_is_the_reconstruction_one() -> None:
    with pytest.raises(ValueError, match=r"--model.visualize_reconstruction must be true or false, got 'no'"):
        DivideAssemble(visualize_reconstruction="no")
    model = DivideAssemble(channels=[8, 16], granularity=[2, 1], visualize_reconstruction=False)
    assert model.hparams["visualize_reconstruction"] is False
    assert isinstance(model.visualizer, ReconstructionVisualizer)
