"""The granularity sweep and the automatic choice, trained for real on the tiny generated category."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from anomalib.cli.cli import AnomalibCLI
from anomalib.engine import Engine
from PIL import Image

from anomalib_divass import DivideAssemble, MVTec
from anomalib_divass.data import mvtec as mvtec_module
from anomalib_divass.granularity import ChooseGranularity
from anomalib_divass.granularity import auto as auto_module
from anomalib_divass.granularity import callback as callback_module
from anomalib_divass.granularity.command import main as granularity_command

pytestmark = pytest.mark.integration


def test_sweep_writes_csv_plots_and_summary_with_sane_values(tiny_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = ["--data.root", str(tiny_root), "--data.category", "washer", "--epochs", "1", "--image_size", "64"]
    args += ["--model.channels", "[8,16]", "--data.train_batch_size", "8", "--trainer.accelerator", "cpu"]
    args += ["--block_sizes", "4", "--no_default", "--holdout", "0.25", "--out", str(out)]
    rows = granularity_command(args)
    assert [(row["setting"], row["variant"]) for row in rows] == [
        ("k=4", "DAAD"),
        ("k=4", "DAAD+"),
        ("vanilla AE", "DAAD"),
        ("vanilla AE", "DAAD+"),
    ]
    with (out / "granularity.csv").open() as file:
        written = list(csv.DictReader(file))
    assert len(written) == 4
    for row in written:
        assert int(row["train_images"]) == 24
        assert int(row["heldout_images"]) == 8
        assert int(row["test_images"]) == 16
        for name in ("image_AUROC", "pixel_AUROC", "synthetic_image_AUROC", "synthetic_pixel_AUROC"):
            assert 0.0 <= float(row[name]) <= 1.0, (name, row[name])
        assert float(row["normal_error"]) > 0
        assert float(row["abnormal_error"]) > 0
        assert math.isclose(float(row["error_gap"]), float(row["abnormal_error"]) - float(row["normal_error"]))
    # DAAD and DAAD+ share one network: same reconstruction error, different maps.
    assert written[0]["normal_error"] == written[1]["normal_error"]
    for name in ("errors.png", "auroc.png"):
        with Image.open(out / name) as picture:
            assert picture.format == "PNG"
            assert picture.size[0] > 300
    summary = (out / "summary.md").read_text()
    assert "| DAAD | auto (error_gap) | k=4 |" in summary
    assert "vanilla AE" in summary

    # Re-running resumes: nothing is trained again, the rows come back from the CSV.
    again = granularity_command(args)
    assert [row["image_AUROC"] for row in again] == pytest.approx([row["image_AUROC"] for row in rows])
    with (out / "granularity.csv").open() as file:
        assert len(list(csv.DictReader(file))) == 4


def test_choose_granularity_reads_only_training_images_and_the_checkpoint_records_it(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_paths: list[str] = []
    choosing = {"now": False}
    read_image = mvtec_module.read_image

    def recording_read_image(path: str, *args: object, **kwargs: object) -> torch.Tensor:
        if choosing["now"]:
            read_paths.append(str(path))
        return read_image(path, *args, **kwargs)

    choose = callback_module.auto_granularity
    seen_candidates: list[tuple[int, ...]] = []

    def recording_choice(*args: object, **kwargs: object) -> auto_module.GranularityChoice:
        choosing["now"] = True
        try:
            choice = choose(*args, **kwargs)
        finally:
            choosing["now"] = False
        seen_candidates.append(choice.granularity)
        return choice

    monkeypatch.setattr(mvtec_module, "read_image", recording_read_image)
    monkeypatch.setattr(callback_module, "auto_granularity", recording_choice)

    size = DivideAssemble.configure_pre_processor((64, 64))
    model = DivideAssemble(granularity="auto", channels=[8, 16], pre_processor=size)
    datamodule = MVTec(root=tiny_root, category="washer", train_batch_size=8, eval_batch_size=8, num_workers=0)
    callback = ChooseGranularity(epochs=1, block_sizes=[2, "whole"])
    engine = Engine(max_epochs=1, callbacks=[callback], default_root_dir=tmp_path, logger=False)
    engine.fit(model, datamodule=datamodule)

    assert seen_candidates, "the automatic choice ran"
    assert read_paths, "the automatic choice read images"
    assert all(Path(path).parent.name == "good" and Path(path).parent.parent.name == "train" for path in read_paths)
    assert not any("/test/" in path for path in read_paths)
    # The chosen block sizes are one of the candidates, built into the network, recorded in the checkpoint.
    chosen = model.granularity
    assert chosen in {(2, 2), (32, 16)}
    assert model.model.granularity == chosen == seen_candidates[0]
    checkpoint_path = engine.trainer.checkpoint_callback.best_model_path
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["granularity"] == list(chosen)
    assert "synthetic defects" in checkpoint["granularity_choice"]
    restored = DivideAssemble.load_from_checkpoint(checkpoint_path)
    assert restored.model.granularity == chosen
    # A model asked for "auto" adopts the checkpoint's choice instead of refusing it.
    fresh = DivideAssemble(granularity="auto", channels=[8, 16], pre_processor=size)
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])
    assert fresh.model.granularity == chosen


def test_choose_command_writes_a_config_the_command_line_trains_with(tiny_root: Path, tmp_path: Path) -> None:
    output = tmp_path / "chosen" / "granularity.yaml"
    data = ["--data.root", str(tiny_root), "--data.category", "washer"]
    tiny = ["--epochs", "1", "--block_sizes", "4", "whole", "--image_size", "64", "--model.channels", "[8,16]"]
    choice = granularity_command(["choose", *data, *tiny, "--trainer.accelerator", "cpu", "--output", str(output)])
    assert choice.granularity in {(4, 4), (32, 16)}
    text = output.read_text()
    assert "for 64 x 64 inputs" in text
    cli = AnomalibCLI(
        ["fit", "--seed_everything", "false", "--config", str(output), "--data", "MVTec", *data], run=False
    )
    assert cli.model.granularity == choice.granularity
    assert cli.model.hparams["channels"] == [8, 16]
    trainer_callbacks = cli._get(cli.config_init, "trainer")["callbacks"] or []
    assert not any(isinstance(callback, ChooseGranularity) for callback in trainer_callbacks), "nothing left to choose"
