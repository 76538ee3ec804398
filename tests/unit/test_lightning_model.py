"""DivideAssemble (the anomalib module): construction checks, NaN guard, checkpoint checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.data import ImageBatch
from anomalib.pre_processing import PreProcessor
from lightning.pytorch import Trainer
from torchvision.transforms.v2 import Resize

from anomalib_divass import DivideAssemble
from anomalib_divass.models.divide_assemble.lightning_model import CheckpointMismatchError, NonFiniteLossError

SMALL = {"channels": [8, 16, 16], "granularity": [4, 2, 1], "num_items": 8}


def bare_model(**kwargs: object) -> DivideAssemble:
    return DivideAssemble(**{**SMALL, **kwargs}, post_processor=False, evaluator=False, visualizer=False)


def test_default_model_is_daad_at_256() -> None:
    model = DivideAssemble()
    assert model.input_size == (256, 256)
    assert model.model.granularity == (32, 16, 8, 4, 2)
    assert model.model.anomaly_map.latent_weight == 0
    assert model.trainer_arguments["gradient_clip_val"] == 0
    assert model.automatic_optimization is False


def test_input_size_that_blocks_do_not_tile_is_refused_with_sizes_that_work() -> None:
    with pytest.raises(ValueError, match=r"250 x 250 does not fit granularity \(32, 16, 8, 4, 2\).*multiple of 64"):
        DivideAssemble(pre_processor=PreProcessor(transform=Resize((250, 250))))
    DivideAssemble(pre_processor=PreProcessor(transform=Resize((192, 320))))


def _loader(batches: list[torch.Tensor]) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader([ImageBatch(image=images) for images in batches], batch_size=None)


def _trainer(epochs: int = 1) -> Trainer:
    return Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_training_steps_update_generator_and_discriminator() -> None:
    torch.manual_seed(0)
    model = bare_model(pre_processor=False)
    before = {name: p.detach().clone() for name, p in model.model.named_parameters()}
    _trainer().fit(model, train_dataloaders=_loader([torch.rand(4, 3, 32, 32) for _ in range(2)]))
    changed = {name for name, p in model.model.named_parameters() if not torch.equal(p, before[name])}
    assert any(name.startswith("autoencoder.memories") for name in changed)
    assert any(name.startswith("autoencoder.encoder") for name in changed)
    assert any(name.startswith("discriminator") for name in changed)


def test_nan_loss_stops_training_and_names_the_step() -> None:
    torch.manual_seed(0)
    model = bare_model(pre_processor=False)
    poisoned = torch.rand(4, 3, 32, 32)
    poisoned[0, 0, 0, 0] = float("nan")
    trainer = _trainer()
    with pytest.raises(NonFiniteLossError, match=r"generator loss became non-finite .* global step 2, batch 1"):
        trainer.fit(model, train_dataloaders=_loader([torch.rand(4, 3, 32, 32), poisoned]))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_checkpoint_of_another_granularity_is_refused() -> None:
    trained = bare_model()
    checkpoint = {"hyper_parameters": dict(trained.hparams), "state_dict": trained.state_dict()}
    other = bare_model(granularity=[2, 2, 1])
    with pytest.raises(CheckpointMismatchError, match=r"granularity: checkpoint \[4, 2, 1\], this model \[2, 2, 1\]"):
        other.on_load_checkpoint(checkpoint)
    bare_model().on_load_checkpoint(checkpoint)  # same configuration: accepted


def test_checkpoint_with_another_evaluators_metric_states_loads_strictly(tmp_path: Path) -> None:
    trained = DivideAssemble(**SMALL)
    state = trained.state_dict()
    state["evaluator.test_metrics.4.fpr_limit"] = torch.tensor(0.3)  # e.g. the leaderboard's AUPRO
    path = tmp_path / "model.ckpt"
    checkpoint = {"hyper_parameters": dict(trained.hparams), "pytorch-lightning_version": "2.6"}
    torch.save({**checkpoint, "state_dict": state}, path)
    loaded = DivideAssemble.load_from_checkpoint(path)
    for name, weight in trained.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], weight), name
    del state["model.autoencoder.encoder.0.0.weight"]  # a missing weight is still an error
    torch.save({**checkpoint, "state_dict": state}, path)
    with pytest.raises(RuntimeError, match=r"Missing key"):
        DivideAssemble.load_from_checkpoint(path)


def test_training_length_defaults_instead_of_lightnings_1000_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    from anomalib_divass.models.divide_assemble import lightning_model

    monkeypatch.setattr(lightning_model, "DEFAULT_MAX_EPOCHS", 2)
    model = bare_model(pre_processor=False)
    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, train_dataloaders=_loader([torch.rand(2, 3, 32, 32)]))
    assert trainer.current_epoch == 2
    explicit = _trainer(epochs=1)
    explicit.fit(bare_model(pre_processor=False), train_dataloaders=_loader([torch.rand(2, 3, 32, 32)]))
    assert explicit.current_epoch == 1


def test_checkpoint_from_before_map_sigma_keeps_its_one_smoothing(tmp_path: Path) -> None:
    trained = DivideAssemble(**SMALL)
    hparams = {name: value for name, value in trained.hparams.items() if name != "map_sigma"}
    path = tmp_path / "model.ckpt"
    torch.save(
        {"hyper_parameters": hparams, "pytorch-lightning_version": "2.6", "state_dict": trained.state_dict()}, path
    )
    loaded = DivideAssemble.load_from_checkpoint(path)
    # Its pixel threshold was computed on maps smoothed once: the output map must stay that map.
    assert loaded.model.anomaly_map.map_sigma == loaded.model.anomaly_map.sigma == 4.0
    maps = torch.rand(1, 1, 32, 32)
    assert torch.equal(loaded.model.anomaly_map.localize(maps), maps)
    assert DivideAssemble(**SMALL).model.anomaly_map.map_sigma == 8.0  # new models: the wider localisation map


def test_map_sigma_below_sigma_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"map_sigma \(8.0\) must be at least --model.sigma \(10.0\).*null"):
        bare_model(sigma=10.0)
    assert bare_model(sigma=10.0, map_sigma=None).model.anomaly_map.map_sigma == 10.0
