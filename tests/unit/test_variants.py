"""The paper's five models, corrupted training inputs, and the normalised map in a training run."""

from __future__ import annotations

import pytest
import torch
from anomalib.data import ImageBatch
from lightning.pytorch import Trainer

from anomalib_divass import DivideAssemble
from anomalib_divass.models.divide_assemble.corruption import InputCorruption
from anomalib_divass.models.divide_assemble.variants import Variant

SMALL = {
    "channels": [8, 16, 16],
    "granularity": [4, 2, 2],
    "num_items": 8,
    "pre_processor": False,
    "post_processor": False,
    "evaluator": False,
    "visualizer": False,
}


def _loader(images: torch.Tensor, paths: list[str] | None = None) -> torch.utils.data.DataLoader:
    batch = ImageBatch(image=images, image_path=paths) if paths is not None else ImageBatch(image=images)
    return torch.utils.data.DataLoader([batch], batch_size=None)


def _trainer(steps: int) -> Trainer:
    return Trainer(
        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu"
    )


@pytest.mark.parametrize("variant", [variant.value for variant in Variant])
def test_each_of_the_papers_models_builds_and_trains_one_step(variant: str) -> None:
    torch.manual_seed(0)
    model = DivideAssemble(variant=variant, **SMALL)
    architecture = Variant(variant).architecture
    autoencoder = model.model.autoencoder
    assert autoencoder.skips == architecture.skips
    assert (len(autoencoder.memories) > 0) == architecture.memory
    if not architecture.skips:
        assert list(autoencoder.memories) == (["2"] if architecture.memory else [])
    if architecture.pixel_memory:
        assert autoencoder.memories["2"].block_size == 1
    assert (model.model.anomaly_map.latent_weight > 0) == (variant == "DAAD+")
    before = {name: value.clone() for name, value in autoencoder.state_dict().items()}
    _trainer(1).fit(model, _loader(torch.rand(4, 3, 32, 32)))
    changed = [name for name, value in autoencoder.state_dict().items() if not torch.equal(value, before[name])]
    assert any(name.startswith("decoder") for name in changed)
    assert any(name.startswith("encoder") for name in changed)
    assert all(any(name.startswith(f"memories.{scale}.") for name in changed) for scale in autoencoder.memories)
    model.eval()
    with torch.no_grad():
        scores = model.model(torch.rand(2, 3, 32, 32)).pred_score
    assert scores.shape == (2,)
    assert torch.isfinite(scores).all()


def test_daad_and_daad_plus_share_weights() -> None:
    daad, daad_plus = DivideAssemble(variant="DAAD", **SMALL), DivideAssemble(variant="DAAD+", **SMALL)
    daad_plus.load_state_dict(daad.state_dict())  # the same network: a DAAD checkpoint scores as DAAD+


@pytest.mark.parametrize("kind", ["perlin", "cutpaste"])
def test_corruption_changes_inputs_never_the_target(kind: str) -> None:
    torch.manual_seed(0)
    images = torch.rand(8, 3, 32, 32)
    original = images.clone()
    corrupted = InputCorruption(kind, probability=1.0)(images)
    assert torch.equal(images, original)  # the clean batch (the target) is untouched
    assert not torch.equal(corrupted, images)
    assert corrupted.shape == images.shape
    assert corrupted.min() >= 0
    assert corrupted.max() <= 1


def test_grey_images_stay_grey_under_perlin_corruption() -> None:
    torch.manual_seed(0)
    grey = torch.rand(4, 1, 32, 32).expand(-1, 3, -1, -1)
    corrupted = InputCorruption("perlin", probability=1.0)(grey)
    assert torch.equal(corrupted[:, 0], corrupted[:, 1])
    assert torch.equal(corrupted[:, 1], corrupted[:, 2])


def test_training_with_corruption_reconstructs_the_clean_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """The generator's reconstruction loss compares the output with the clean batch."""
    torch.manual_seed(0)
    model = DivideAssemble(corruption="cutpaste", **SMALL)
    images = torch.rand(4, 3, 32, 32)
    seen: dict[str, torch.Tensor] = {}
    forward = model.model.forward

    def spy(inputs: torch.Tensor) -> object:
        seen["input"] = inputs.detach().clone()
        return forward(inputs)

    loss = model.generator_loss.forward

    def spy_loss(target: torch.Tensor, *args: object) -> object:
        seen["target"] = target.detach().clone()
        return loss(target, *args)

    monkeypatch.setattr(model.model, "forward", spy)
    monkeypatch.setattr(model.generator_loss, "forward", spy_loss)
    monkeypatch.setattr(model.corruption, "probability", 1.0)
    _trainer(1).fit(model, _loader(images))
    assert torch.equal(seen["target"], images)
    assert not torch.equal(seen["input"], images)


def test_normalised_training_holds_out_images_and_fills_the_buffers() -> None:
    torch.manual_seed(0)
    model = DivideAssemble(error_measure="l2", normalization="pixel", **SMALL)
    paths = [f"train/good/{index:03d}.png" for index in range(20)]
    trained: list[int] = []
    forward = model.model.forward

    def spy(inputs: torch.Tensor) -> object:
        if model.model.training:
            trained.append(inputs.shape[0])
        return forward(inputs)

    model.model.forward = spy  # type: ignore[method-assign]
    _trainer(1).fit(model, _loader(torch.rand(20, 3, 32, 32), paths))
    from anomalib_divass.models.divide_assemble.holdout import heldout_mask

    held = int(heldout_mask(paths).sum())
    assert held >= 2
    assert trained == [20 - held]  # held-out images are never trained on
    assert model.model.anomaly_map.normal_mean.shape == (1, 1, 32, 32)
    assert model.model.anomaly_map.normal_spread.min() > 0
    restored = DivideAssemble(error_measure="l2", normalization="pixel", **SMALL)
    restored.load_state_dict(model.state_dict())
    assert torch.equal(restored.model.anomaly_map.normal_mean, model.model.anomaly_map.normal_mean)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("variant", "VAE", "--model.variant must be one of"),
        ("error_measure", "l3", "--model.error_measure must be one of"),
        ("normalization", "pixels", "--model.normalization must be one of"),
        ("corruption", "blur", "--model.corruption must be one of"),
        ("latent_weight", 1.5, r"--model.latent_weight must lie in \[0.0, 1.0\]"),
    ],
)
def test_bad_choices_are_named(name: str, value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        DivideAssemble(**{**SMALL, name: value})


def test_a_daad_checkpoint_loads_as_daad_plus_but_not_as_another_network(tmp_path: object) -> None:
    from pathlib import Path

    from anomalib_divass.models.divide_assemble.lightning_model import CheckpointMismatchError

    model = DivideAssemble(variant="DAAD", **SMALL)
    trainer = _trainer(1)
    trainer.fit(model, _loader(torch.rand(4, 3, 32, 32)))
    path = Path(str(tmp_path)) / "daad.ckpt"
    trainer.save_checkpoint(path)
    plus = DivideAssemble.load_from_checkpoint(path, variant="DAAD+")
    assert plus.hparams["variant"] == "DAAD+"
    assert plus.model.anomaly_map.latent_weight > 0
    checkpoint = torch.load(path, weights_only=False)
    DivideAssemble(variant="DAAD+", **SMALL).on_load_checkpoint(checkpoint)  # the same network: accepted
    with pytest.raises(CheckpointMismatchError, match="variant: checkpoint DAAD"):  # as `anomalib test` would
        DivideAssemble(variant="AE+Skip", **SMALL).on_load_checkpoint(checkpoint)
