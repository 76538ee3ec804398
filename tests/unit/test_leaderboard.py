"""Leaderboard pieces without training: input checks, resume bookkeeping, reports, backbone weights."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from anomalib_divass.data.mvtec import DatasetNotFoundError
from anomalib_divass.leaderboard import main
from anomalib_divass.leaderboard.measure import leaderboard_evaluator
from anomalib_divass.leaderboard.models import (
    BackboneWeightsError,
    LeaderboardSettings,
    UnknownModelError,
    build_model,
    resolve_models,
)
from anomalib_divass.leaderboard.report import published_results, write_reports
from anomalib_divass.leaderboard.runner import PairResult, ResultStore, check_categories, run_pairs


def test_unknown_model_lists_known_ones(tiny_root: Path, capsys: pytest.CaptureFixture) -> None:
    known = r"Known models: DAAD, DAAD\+, AE, MemAE, AE\+Skip, PaDiM, PatchCore, GANomaly, Draem"
    with pytest.raises(UnknownModelError, match=known):
        resolve_models(["DAAD", "Fastflow"])
    assert main(["--root", str(tiny_root), "--categories", "washer", "--models", "Fastflow"]) == 2
    assert "Unknown model 'Fastflow'" in capsys.readouterr().err


def test_rescoring_model_brings_the_model_it_rescores() -> None:
    assert resolve_models(["daad+"]) == ["DAAD", "DAAD+"]
    assert resolve_models(["ganomaly", "DAAD", "daad", "daad+"]) == ["GANomaly", "DAAD", "DAAD+"]


def test_unknown_category_names_the_ones_there(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(DatasetNotFoundError, match="categories there: washer"):
        check_categories(tiny_root, ["bottle"])
    assert main(["--root", str(tiny_root), "--categories", "bottle", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bottle" in err
    assert "--root" in err
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_root_without_mvtec_layout(tmp_path: Path) -> None:
    (tmp_path / "photos" / "misc").mkdir(parents=True)
    (tmp_path / "photos" / "misc" / "a.png").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="train/good"):
        check_categories(tmp_path, ["photos"])
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        check_categories(tmp_path / "nowhere", ["photos"])


def test_category_without_anomalies_is_refused(tiny_root: Path, tmp_path: Path) -> None:
    category = tmp_path / "only_good"
    (category / "train").mkdir(parents=True)
    (category / "train" / "good").symlink_to(tiny_root / "washer" / "train" / "good")
    (category / "test" / "good").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no anomalous test images"):
        check_categories(None, [str(category)])


def test_category_given_as_folder(tiny_root: Path) -> None:
    (category,) = check_categories(None, [str(tiny_root / "washer")])
    assert (category.name, category.root, category.num_train_images()) == ("washer", tiny_root, 32)


def test_finished_pairs_are_not_run_again(tiny_root: Path, tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    settings = LeaderboardSettings()
    finished = PairResult("PaDiM", "washer", "ok", metrics={"image_AUROC": 0.75}, train_seconds=3.0)
    finished.settings = {"backbone": "resnet18", "backbone_weights": "untrained (random init)"}
    store.save(finished)
    stamp = store.pair_path("PaDiM", "washer").stat().st_mtime_ns
    lines: list[str] = []
    (result,) = run_pairs(["PaDiM"], check_categories(tiny_root, ["washer"]), settings, store, log=lines.append)
    assert result == finished
    assert store.pair_path("PaDiM", "washer").stat().st_mtime_ns == stamp
    assert lines == ["resume: PaDiM on washer is finished, not retrained"]


def test_failed_rescore_is_recorded_and_reported(tiny_root: Path, tmp_path: Path) -> None:
    """DAAD+ without a finished DAAD fails with a message; the run records it and goes on."""
    store = ResultStore(tmp_path)
    lines: list[str] = []
    (result,) = run_pairs(
        ["DAAD+"], check_categories(tiny_root, ["washer"]), LeaderboardSettings(), store, log=lines.append
    )
    assert result.status == "failed"
    assert "DAAD on washer did not finish" in result.error
    assert json.loads(store.pair_path("DAAD+", "washer").read_text())["status"] == "failed"
    assert store.log_path("DAAD+", "washer").read_text().startswith("Traceback")
    assert any(line.startswith("FAILED: DAAD+ on washer") for line in lines)


def _ok(model: str, category: str, auroc: float, **settings: object) -> PairResult:
    metrics = {"image_AUROC": auroc, "pixel_AUROC": 0.8, "image_F1Score": 0.7, "pixel_F1Score": 0.3}
    metrics["pixel_AUPRO"] = 0.6
    return PairResult(
        model, category, "ok", metrics=metrics, train_seconds=10.0, images_per_second=20.0, model_size_mb=1.5,
        settings=dict(settings), roc=([0.0, 0.5, 1.0], [0.0, 1.0, 1.0]),
    )  # fmt: skip


def test_reports_mark_untrained_backbones_and_keep_published_apart(tmp_path: Path) -> None:
    results = [
        _ok("DAAD", "bottle", 0.9, epochs=50),
        _ok("PaDiM", "bottle", 0.6, backbone="resnet18", backbone_weights="untrained (random init)"),
        _ok("DAAD", "magnetic_tile", 0.7, epochs=50),
        _ok("PaDiM", "magnetic_tile", 0.5, backbone="resnet18", backbone_weights="untrained (random init)"),
    ]
    written = write_reports(results, tmp_path)
    assert {p.name for p in written} == {"leaderboard.csv", "leaderboard.md", "metrics.png", "cost.png"} | {
        "roc_bottle.png",
        "roc_magnetic_tile.png",
    }
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written if p.suffix == ".png")
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    mean = next(r for r in rows if r["model"] == "DAAD" and r["category"].startswith("mean"))
    assert float(mean["image_AUROC"]) == pytest.approx(0.8)
    markdown = (tmp_path / "leaderboard.md").read_text()
    measured, published = markdown.split("### Published by anomalib")
    assert "PaDiM (untrained backbone)" in measured
    assert "ImageNet" not in measured.split("\n| model")[1]  # no published row among measured ones
    assert "| PaDiM (ResNet-18, ImageNet) | bottle | 0.994 |" in published
    assert "magnetic_tile |" not in published  # magnetic tile is not an MVTec AD category


def test_incomplete_run_never_looks_complete(tmp_path: Path) -> None:
    write_reports([_ok("DAAD", "bottle", 0.9)], tmp_path)
    assert (tmp_path / "leaderboard.csv").is_file()
    failed = PairResult("AE", "bottle", "failed", error="NonFiniteLossError: the generator loss became non-finite")
    write_reports([_ok("DAAD", "bottle", 0.9), failed], tmp_path)
    assert not (tmp_path / "leaderboard.csv").exists()
    assert not (tmp_path / "leaderboard.md").exists()
    markdown = (tmp_path / "leaderboard_INCOMPLETE.md").read_text()
    assert "**INCOMPLETE**: 1 of 2 pairs failed" in markdown
    assert "| AE | bottle | FAILED: NonFiniteLossError" in markdown
    statuses = {r["model"]: r["status"] for r in csv.DictReader((tmp_path / "leaderboard_INCOMPLETE.csv").open())}
    assert statuses["AE"] == "failed"


def test_published_results_come_from_anomalib_readmes() -> None:
    rows = {(model, backbone): metrics for model, backbone, metrics in published_results("bottle")}
    assert rows["PatchCore", "Wide ResNet-50"]["image_AUROC"] == pytest.approx(1.0)
    assert published_results("magnetic_tile") == []


def test_local_backbone_weights_are_loaded(tmp_path: Path) -> None:
    import timm

    reference = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    settings = LeaderboardSettings(backbone_weights={"resnet18": path})
    model = build_model("PaDiM", settings, leaderboard_evaluator()[0])
    loaded = model.model.feature_extractor.feature_extractor.state_dict()
    assert torch.equal(loaded["layer1.0.conv1.weight"], reference.state_dict()["layer1.0.conv1.weight"])
    untrained = build_model("PaDiM", LeaderboardSettings(), leaderboard_evaluator()[0])
    other = untrained.model.feature_extractor.feature_extractor.state_dict()["layer1.0.conv1.weight"]
    assert not torch.equal(other, reference.state_dict()["layer1.0.conv1.weight"])


def test_wrong_backbone_weights_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "linear.pth"
    torch.save(torch.nn.Linear(3, 3).state_dict(), path)
    with pytest.raises(BackboneWeightsError, match="does not hold resnet18 weights"):
        build_model("PaDiM", LeaderboardSettings(backbone_weights={"resnet18": path}), leaderboard_evaluator()[0])


def test_mean_over_categories_says_when_settings_differ(tmp_path: Path) -> None:
    results = [_ok("DAAD", "bottle", 0.9, epochs=50), _ok("DAAD", "magnetic_tile", 0.7, epochs=10)]
    write_reports(results, tmp_path)
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "| DAAD (50 ep) | bottle |" in markdown
    assert "| DAAD (10 ep) | magnetic_tile |" in markdown
    assert "| DAAD (epochs differ) | mean (2/2) | 0.800 |" in markdown


def test_divide_assemble_settings_come_from_the_shipped_config_and_the_model() -> None:
    from anomalib_divass.configs import config_path
    from anomalib_divass.leaderboard.command import _parser
    from anomalib_divass.leaderboard.models import DEFAULT_CONFIG, MODELS
    from anomalib_divass.models.divide_assemble.lightning_model import DAAD_PLUS_LATENT_WEIGHT, DEFAULT_MAX_EPOCHS

    assert config_path() == DEFAULT_CONFIG  # inside the package: found from a wheel as from the repository
    args = _parser().parse_args(["--categories", "washer"])
    assert args.daad_config == config_path()
    assert args.latent_weight == DAAD_PLUS_LATENT_WEIGHT
    settings = LeaderboardSettings()
    assert settings.daad.path == config_path()
    assert settings.latent_weight == DAAD_PLUS_LATENT_WEIGHT
    assert settings.daad.max_epochs == DEFAULT_MAX_EPOCHS  # the config leaves the training length to the model
    assert (settings.daad.train_batch_size, settings.daad.seed) == (8, 42)  # the config's
    assert MODELS["DAAD"].settings_of(settings)["config"] == "shipped"
    assert MODELS["DAAD+"].settings_of(settings)["latent_weight"] == DAAD_PLUS_LATENT_WEIGHT


def test_daad_config_with_arguments_the_model_does_not_take_is_refused(tmp_path: Path) -> None:
    from anomalib_divass.leaderboard.models import MODELS, DivideAssembleConfig

    old = tmp_path / "old.yaml"
    old.write_text(
        "model:\n  class_path: anomalib_divass.DivideAssemble\n  init_args:\n"
        "    similarity: cosine\n    discriminator_lr: 0.0002\n    lr: 0.002\n"
    )
    with pytest.raises(ValueError, match=r"does not take: discriminator_lr, similarity\. Its arguments: "):
        DivideAssembleConfig.load(old)
    with pytest.raises(FileNotFoundError, match="leave it out for the shipped config"):
        DivideAssembleConfig.load(tmp_path / "missing.yaml")
    new = tmp_path / "new.yaml"
    new.write_text(
        old.read_text().replace("    similarity: cosine\n", "").replace("    discriminator_lr: 0.0002\n", "")
    )
    config = DivideAssembleConfig.load(new)
    assert config.init_args == {"lr": 0.002}
    assert MODELS["DAAD"].settings_of(LeaderboardSettings(daad=config))["config"] == str(new)


def test_the_papers_five_models_and_offline_draem_are_contestants(monkeypatch: pytest.MonkeyPatch) -> None:
    from anomalib_divass.leaderboard.models import MODELS, LeaderboardSettings, build_model

    assert {"AE", "MemAE", "AE+Skip", "DAAD", "DAAD+", "Draem"} <= set(MODELS)
    settings = LeaderboardSettings()
    for name, variant in {"AE": "AE", "MemAE": "MemAE", "AE+Skip": "AE+Skip", "DAAD": "DAAD"}.items():
        assert build_model(name, settings, False).hparams["variant"] == variant

    def no_download(*args: object, **kwargs: object) -> None:
        msg = "Draem tried to download its texture dataset"
        raise AssertionError(msg)

    monkeypatch.setattr("anomalib.models.image.draem.lightning_model.download_and_extract", no_download)
    draem = build_model("Draem", settings, False)
    assert draem.augmenter.anomaly_source_paths == []  # Perlin noise only
