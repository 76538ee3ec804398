"""Granularity sweep parts that need no training: settings, held-out split, synthetic defects, choice."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from anomalib_divass.granularity import (
    ChooseGranularity,
    choose_setting,
    command,
    holdout_split,
    oracle_setting,
    sweep_settings,
    synthetic_defects,
)
from anomalib_divass.granularity import settings as settings_module
from anomalib_divass.granularity.auto import GranularityChoice, candidate_settings
from anomalib_divass.granularity.command import choice_config
from anomalib_divass.granularity.evaluation import model_defaults, seeded
from anomalib_divass.granularity.settings import parse_block_size, uniform_granularity
from anomalib_divass.models.divide_assemble import lightning_model
from anomalib_divass.models.divide_assemble.torch_model import check_input_size


def test_synthetic_defects_change_the_image_inside_their_mask_only() -> None:
    images = torch.rand(6, 3, 64, 64)
    defective, masks = synthetic_defects(images, seed=1)
    assert defective.shape == images.shape
    assert masks.shape == (6, 1, 64, 64)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert (masks.flatten(1).sum(1) > 0).all(), "every image gets a defect"
    difference = (defective - images).abs().amax(dim=1, keepdim=True)
    assert torch.equal(difference[masks == 0], torch.zeros_like(difference[masks == 0]))
    assert difference[masks == 1].mean() > 0.05
    # Same seed, same defects; another seed, other defects.
    again, masks_again = synthetic_defects(images, seed=1)
    assert torch.equal(again, defective)
    assert torch.equal(masks_again, masks)
    assert not torch.equal(synthetic_defects(images, seed=2)[1], masks)


def test_synthetic_defects_accept_grayscale() -> None:
    defective, masks = synthetic_defects(torch.rand(2, 1, 32, 32), seed=0)
    assert defective.shape == (2, 3, 32, 32)
    assert masks.sum() > 0


def test_holdout_split_is_a_disjoint_cover() -> None:
    train, heldout = holdout_split(50, 0.2, seed=3)
    assert len(heldout) == 10
    assert sorted(train + heldout) == list(range(50))
    assert holdout_split(50, 0.2, seed=3) == (train, heldout)
    with pytest.raises(ValueError, match="hold out"):
        holdout_split(3, 0.1)
    with pytest.raises(ValueError, match="train on"):
        holdout_split(2, 0.9)


def test_settings_cover_pixelwise_to_whole_map_and_fit_the_input() -> None:
    settings = sweep_settings([1, 2, 8, 16, 128, 256, "whole"], image_size=(256, 256), num_scales=5)
    names = [s.name for s in settings]
    # 256 and "whole" give the same blocks as 128 capped at every map: only the first is kept.
    assert names == ["k=1", "k=2", "k=8", "k=16", "k=128", "default", "vanilla AE"]
    assert settings[0].granularity == (1, 1, 1, 1, 1)
    assert settings[3].granularity == (16, 16, 16, 16, 8)
    assert settings[4].granularity == (128, 64, 32, 16, 8) == uniform_granularity("whole", (256, 256), 5)
    assert not settings[-1].use_memory
    for setting in settings:
        check_input_size((256, 256), setting.granularity)
    with pytest.raises(ValueError, match="power of two"):
        parse_block_size("3")


def _row(name: str, synthetic: tuple[float, float, float], real: tuple[float, float], memory: bool = True) -> dict:
    return {
        "setting": name,
        "variant": "DAAD",
        "granularity": "4 4",
        "use_memory": str(memory),
        "synthetic_error_gap": synthetic[0],
        "synthetic_image_AUROC": synthetic[1],
        "synthetic_pixel_AUROC": synthetic[2],
        "image_AUROC": real[0],
        "pixel_AUROC": real[1],
    }


def test_choice_reads_synthetic_columns_and_oracle_reads_real_ones() -> None:
    rows = [
        _row("k=1", (0.002, 0.70, 0.80), (0.95, 0.90)),
        _row("k=4", (0.001, 0.90, 0.85), (0.80, 0.85)),
        _row("k=8", (0.003, 0.60, 0.60), (0.70, 0.85)),
        _row("vanilla AE", (0.009, 0.99, 0.99), (0.99, 0.99), memory=False),  # not a granularity
    ]
    by_gap = choose_setting(rows)
    assert by_gap.setting == "k=8"
    assert [name for name, _ in by_gap.ranking] == ["k=8", "k=1", "k=4"]
    assert "largest reconstruction-error gap" in by_gap.reason
    assert "k=1 0.002" in by_gap.reason
    by_auroc = choose_setting(rows, criterion="auroc")
    assert by_auroc.setting == "k=4"
    assert math.isclose(by_auroc.score, 0.875)
    assert oracle_setting(rows)["setting"] == "k=1"
    with pytest.raises(ValueError, match="Unknown granularity criterion"):
        choose_setting(rows, criterion="accuracy")
    with pytest.raises(ValueError, match="nothing to choose"):
        choose_setting(rows, variant="DAAD+")


def test_auto_granularity_refuses_to_score_before_it_is_chosen() -> None:
    from types import SimpleNamespace

    from anomalib_divass import DivideAssemble

    model = DivideAssemble(granularity="auto")
    assert model.granularity is None
    assert model.hparams["granularity"] == "auto"
    with pytest.raises(ValueError, match="--ckpt_path"):
        model.on_test_start()
    # The choice is made outside the model (ChooseGranularity); training without it is refused.
    model._trainer = SimpleNamespace(datamodule=None)
    with pytest.raises(ValueError, match="must be chosen before training"):
        model.setup("fit")


def test_defaults_come_from_the_model() -> None:
    assert settings_module.DEFAULT_GRANULARITY is lightning_model.DEFAULT_GRANULARITY
    defaults = model_defaults()
    assert defaults["granularity"] == lightning_model.DEFAULT_GRANULARITY
    assert "pre_processor" not in defaults
    assert not {"similarity", "discriminator_channels", "feature_weight", "auto_epochs"} & defaults.keys()
    # The automatic choice adds the model's default only where it has the network's scales and fits the input.
    assert [s.name for s in candidate_settings([4], (256, 256), 5)] == ["k=4", "default"]
    assert [s.name for s in candidate_settings([4], (96, 96), 5)] == ["k=4"]  # 96 is not a multiple of 64
    assert [s.name for s in candidate_settings([4], (256, 256), 2)] == ["k=4"]


def test_seeded_repeats_draws_and_gives_the_random_state_back() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with seeded(7):
        first = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(torch.random.get_rng_state(), before)
    with seeded(7):
        again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], again[0])
    assert first[1:] == again[1:]


def test_choice_config_is_a_model_config_anomalib_reads() -> None:
    choice = GranularityChoice("whole map", (32, 16), 0.003, (("whole map", 0.003), ("k=4", 0.001)))
    text = choice_config(choice, {"channels": [8, 16]}, image_side=64)
    assert text.startswith("# Chosen by `anomalib-divass granularity choose` for 64 x 64 inputs: granularity [32, 16]")
    config = yaml.safe_load(text)
    assert config == {
        "model": {
            "class_path": "anomalib_divass.DivideAssemble",
            "init_args": {"granularity": [32, 16], "channels": [8, 16]},
        }
    }


def test_commands_take_model_flags_with_the_model_defaults(tmp_path: Path) -> None:
    sweep = command._parse(["--data.root", str(tmp_path), "--data.category", "x", "--model.channels", "[8,16]"])
    assert getattr(sweep, "model.channels") == [8, 16]
    assert getattr(sweep, "model.latent_weight") == lightning_model.DAAD_PLUS_LATENT_WEIGHT  # DAAD+ is scored too
    assert not hasattr(sweep, "model.granularity")  # swept, not given
    chosen = command._parse_choose(["--data.root", str(tmp_path), "--data.category", "x"])
    assert chosen.epochs == ChooseGranularity().epochs
    assert tuple(chosen.block_sizes) == ChooseGranularity().block_sizes
    # A bad model argument stops the command before any image is read, naming the flag.
    missing = ["--data.root", str(tmp_path / "missing"), "--data.category", "x"]
    with pytest.raises(SystemExit, match=r"--model\.channels"):
        command.main(["choose", *missing, "--model.channels", "[0]"])
