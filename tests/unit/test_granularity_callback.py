"""ChooseGranularity: the choice before training, outside the model, and its command-line wiring."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from anomalib.cli.cli import AnomalibCLI
from anomalib.engine import Engine

from anomalib_divass import DivideAssemble, MVTec
from anomalib_divass.granularity import ChooseGranularity, install_cli_choice
from anomalib_divass.granularity import callback as callback_module
from anomalib_divass.models.divide_assemble.lightning_model import DEFAULT_GRANULARITY

SMALL = {"channels": [8, 16], "pre_processor": DivideAssemble.configure_pre_processor((64, 64))}


def fake_trainer(**overrides: object) -> SimpleNamespace:
    """What the callback reads of a one-process trainer."""
    broadcasts: list[object] = []

    def broadcast(obj: object, src: int = 0) -> object:
        broadcasts.append(obj)
        return obj

    values = {
        "is_global_zero": True,
        "strategy": SimpleNamespace(broadcast=broadcast, root_device=torch.device("cpu")),
        "datamodule": None,
        "broadcasts": broadcasts,
    }
    return SimpleNamespace(**{**values, **overrides})


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="epochs >= 1"):
        ChooseGranularity(epochs=0)
    with pytest.raises(ValueError, match="power of two"):
        ChooseGranularity(block_sizes=[3])
    with pytest.raises(ValueError, match="Unknown granularity criterion"):
        ChooseGranularity(criterion="accuracy")
    with pytest.raises(ValueError, match="holdout in"):
        ChooseGranularity(holdout=1.0)
    assert ChooseGranularity(block_sizes=["8", "Whole"]).block_sizes == (8, "whole")


def test_a_chosen_granularity_and_other_stages_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(callback_module, "auto_granularity", pytest.fail)  # never trains here
    fixed = DivideAssemble(granularity=[2, 1], channels=[8, 16], pre_processor=False)
    network = fixed.model
    ChooseGranularity().setup(fake_trainer(), fixed, "fit")
    assert fixed.model is network
    auto = DivideAssemble(granularity="auto", pre_processor=False)
    for stage in ("validate", "test", "predict"):
        ChooseGranularity().setup(fake_trainer(), auto, stage)
    assert auto.granularity is None


def test_without_a_datamodule_every_process_stops_with_the_reason() -> None:
    model = DivideAssemble(granularity="auto", pre_processor=False)
    trainer = fake_trainer()
    with pytest.raises(ValueError, match="no anomalib datamodule"):
        ChooseGranularity().setup(trainer, model, "fit")
    assert "no anomalib datamodule" in trainer.broadcasts[0]  # process 0 told the others
    # Another process receives process 0's error instead of a choice.
    other = fake_trainer(is_global_zero=False)
    other.strategy.broadcast = lambda obj, src=0: "ValueError: no anomalib datamodule"
    with pytest.raises(RuntimeError, match="Process 0 could not choose"):
        ChooseGranularity().setup(other, model, "fit")
    assert model.granularity is None


def test_other_processes_build_what_process_0_broadcast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(callback_module, "auto_granularity", pytest.fail)
    model = DivideAssemble(granularity="auto", **SMALL)
    other = fake_trainer(is_global_zero=False)
    other.strategy.broadcast = lambda obj, src=0: ([4, 2], "k=4 was best.")
    ChooseGranularity().setup(other, model, "fit")
    assert model.granularity == model.model.granularity == (4, 2)
    assert model.hparams["granularity"] == [4, 2]
    assert model.granularity_choice == "k=4 was best."


def test_variants_without_block_memories_get_the_default_without_training(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(callback_module, "auto_granularity", pytest.fail)
    trainer = fake_trainer(datamodule=SimpleNamespace(train_data=["images"]))
    model = DivideAssemble(granularity="auto", variant="AE+Skip")
    ChooseGranularity().setup(trainer, model, "fit")
    assert model.granularity == DEFAULT_GRANULARITY
    assert "no block memories" in model.granularity_choice


def test_the_callback_chooses_builds_the_network_and_the_model_trains(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    states: list[tuple] = []
    choose = callback_module.auto_granularity

    def state() -> tuple:
        return torch.random.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()

    def recording_choice(*args: object, **kwargs: object) -> object:
        before = state()
        choice = choose(*args, **kwargs)
        states.append((before, state(), kwargs))
        return choice

    monkeypatch.setattr(callback_module, "auto_granularity", recording_choice)
    callback = ChooseGranularity(epochs=1, block_sizes=[4, "whole"])
    model = DivideAssemble(granularity="auto", **SMALL)
    datamodule = MVTec(root=tiny_root, category="washer", train_batch_size=8, eval_batch_size=8, num_workers=0)
    engine = Engine(
        max_epochs=1,
        callbacks=[callback],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    engine.fit(model, datamodule=datamodule)

    # Chosen once, among the candidates at this input size (64 px, two scales), on the trainer's device.
    (before, after, arguments), *more = states
    assert not more
    assert arguments["device"] == torch.device("cpu")
    assert arguments["batch_size"] == 8
    assert callback.choice is not None
    assert {name for name, _ in callback.choice.ranking} == {"k=4", "whole map"}
    assert model.granularity in {(4, 4), (32, 16)}
    assert model.granularity == model.model.granularity == callback.choice.granularity
    assert model.hparams["granularity"] == list(model.granularity)
    assert "synthetic defects" in model.granularity_choice
    # The process was not reseeded: torch, Python and NumPy draw as if nothing had run.
    assert torch.equal(before[0], after[0])
    assert before[1] == after[1]
    assert np.array_equal(before[2], after[2])
    # The model then trained (Lightning built its optimizers on the new network) and the checkpoint records it.
    assert engine.trainer.global_step > 0
    checkpoint = torch.load(engine.trainer.checkpoint_callback.best_model_path, map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["granularity"] == list(model.granularity)
    assert checkpoint["granularity_choice"] == model.granularity_choice


def _cli(subcommand: str, *args: str, root: Path) -> AnomalibCLI:
    data = ["--data", "MVTec", "--data.root", str(root), "--data.category", "washer"]
    quiet = ["--seed_everything", "false"]  # leave this test process's random state alone
    return AnomalibCLI([subcommand, *quiet, "--model", "DivideAssemble", *data, *args], run=False)


def _chooser(cli: AnomalibCLI) -> list[ChooseGranularity]:
    callbacks = cli._get(cli.config_init, "trainer")["callbacks"] or []
    return [callback for callback in callbacks if isinstance(callback, ChooseGranularity)]


@pytest.mark.parametrize("subcommand", ["fit", "train"])
def test_the_command_line_adds_the_callback_for_auto_only(subcommand: str, tmp_path: Path) -> None:
    install_cli_choice()
    wrapped = AnomalibCLI.instantiate_engine
    install_cli_choice()  # idempotent
    assert AnomalibCLI.instantiate_engine is wrapped
    cli = _cli(subcommand, "--model.granularity", "auto", root=tmp_path)
    (added,) = _chooser(cli)
    assert added.epochs == ChooseGranularity().epochs
    assert added in cli.engine._cache.args["callbacks"]  # the Engine that runs the subcommand has it
    assert not _chooser(_cli(subcommand, "--model.granularity", "[32,16,8,4,2]", root=tmp_path))
    # One named on the command line is used as it is, not doubled.
    given = _cli(
        subcommand,
        "--model.granularity",
        "auto",
        "--trainer.callbacks+=anomalib_divass.granularity.ChooseGranularity",
        "--trainer.callbacks.epochs",
        "2",
        "--trainer.callbacks.block_sizes",
        "[8,whole]",
        root=tmp_path,
    )
    (kept,) = _chooser(given)
    assert (kept.epochs, kept.block_sizes) == (2, (8, "whole"))
