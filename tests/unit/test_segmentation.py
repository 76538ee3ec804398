"""The defect segmenter: shapes, what it trains on, and that it finds a defect after training."""

from __future__ import annotations

import pytest
import torch
from anomalib.data import ImageBatch
from lightning.pytorch import Trainer

from anomalib_divass import DivideAssemble
from anomalib_divass.models.divide_assemble.segmentation import DefectSegmenter
from anomalib_divass.models.divide_assemble.synthetic import defects_on_some


@pytest.mark.parametrize(("channels", "size"), [(3, (32, 48)), (1, (30, 46))])
def test_segmenter_gives_one_logit_per_pixel_and_gradients(channels: int, size: tuple[int, int]) -> None:
    segmenter = DefectSegmenter(in_channels=channels, width=4, depth=3, stride=2)
    images = torch.rand(2, channels, *size, requires_grad=True)
    logits = segmenter(images, torch.rand(2, channels, *size))
    assert logits.shape == (2, 1, *size)
    logits.sum().backward()
    assert images.grad is not None
    assert all(parameter.grad is not None for parameter in segmenter.parameters())


def test_defects_on_some_leaves_the_batch_and_the_other_images_alone() -> None:
    torch.manual_seed(0)
    images = torch.rand(16, 3, 32, 32)
    original = images.clone()
    defective, masks = defects_on_some(images, probability=0.5)
    assert torch.equal(images, original)
    marked = masks.flatten(1).amax(dim=1) > 0
    assert 0 < int(marked.sum()) < 16
    assert torch.equal(defective[~marked], images[~marked])
    changed = (defective != images).any(dim=1, keepdim=True)
    assert bool((changed <= (masks > 0)).all()), "a pixel outside a mask was changed"
    assert bool(changed[marked].flatten(1).any(dim=1).all()), "a marked image is unchanged"


def _model(**overrides: object) -> DivideAssemble:
    arguments = {
        "channels": [8, 16],
        "granularity": [2, 1],
        "num_items": 16,
        "segmentation": True,
        "sigma": 1.0,
        "pre_processor": False,
        "post_processor": False,
        "evaluator": False,
        "visualizer": False,
    }
    return DivideAssemble(**{**arguments, **overrides})


def test_segmentation_refuses_map_settings_it_replaces() -> None:
    with pytest.raises(ValueError, match=r"error_measure and --model\.normalization do not apply"):
        _model(error_measure="ssim")


def test_eval_map_is_the_smoothed_defect_probability() -> None:
    model = _model().eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        output = model.model(images)
        reconstruction = model.model.autoencoder(images).image
        smoothed = model.model.anomaly_map.blur(torch.sigmoid(model.model.segmenter(images, reconstruction)))
    # The score comes from the probability at sigma, the output map is smoothed on to map_sigma.
    torch.testing.assert_close(output.pred_score, model.model.anomaly_map.score(smoothed))
    torch.testing.assert_close(output.anomaly_map, model.model.anomaly_map.localize(smoothed))
    assert bool(((output.anomaly_map >= 0) & (output.anomaly_map <= 1)).all())


def _plain_images(count: int, generator: torch.Generator) -> torch.Tensor:
    """Normal images: a smooth horizontal gradient with a little noise."""
    ramp = torch.linspace(0.3, 0.7, 32).expand(32, 32)
    return (ramp + 0.02 * torch.randn(count, 3, 32, 32, generator=generator)).clamp(0, 1)


def test_segmenter_learns_and_finds_a_defect_above_normals() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = _model()
    initial = {name: value.clone() for name, value in model.model.segmenter.state_dict().items()}
    batches = [ImageBatch(image=_plain_images(8, generator)) for _ in range(10)]
    trainer = Trainer(max_epochs=12, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, torch.utils.data.DataLoader(batches, batch_size=None))
    after = model.model.segmenter.state_dict()
    assert any(not torch.equal(after[name], initial[name]) for name in initial), "the segmenter did not train"

    normals = _plain_images(8, generator)
    anomalous = normals.clone()
    anomalous[:, :, 10:18, 12:20] = 0.0  # a dark square: a hole
    model.eval()
    with torch.no_grad():
        normal_scores = model.model(normals).pred_score
        anomalous_scores = model.model(anomalous).pred_score
        anomalous_map = model.model(anomalous).anomaly_map
    assert float(anomalous_scores.min()) > float(normal_scores.max())
    inside = anomalous_map[:, :, 10:18, 12:20].mean()
    outside = anomalous_map[:, :, 24:, :].mean()
    assert float(inside) > float(outside)
