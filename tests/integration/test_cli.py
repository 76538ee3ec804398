"""The real anomalib command line, in subprocesses, on a tiny generated dataset.

One training run (the literal ``anomalib train --model DivideAssemble --data MVTec``) is
shared by the tests of this module; each test checks one thing a user relies on.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from cli_helpers import OFFLINE, anomalib, metrics_of, mvtec, run

pytestmark = pytest.mark.integration


@dataclass
class TrainedRun:
    root: Path
    workdir: Path
    process: subprocess.CompletedProcess
    results: Path

    @property
    def checkpoint(self) -> Path:
        return self.results / "weights" / "lightning" / "model.ckpt"


EPOCHS = 12


@pytest.fixture(scope="module")
def trained(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    workdir = tmp_path_factory.mktemp("run")
    process = anomalib(
        "train",
        "--model",
        "DivideAssemble",
        *mvtec(tiny_root),
        "--data.train_batch_size",
        "8",
        "--seed_everything",
        "0",
        "--trainer.max_epochs",
        str(EPOCHS),
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir",
        str(workdir / "logs"),
        cwd=workdir,
    )
    return TrainedRun(tiny_root, workdir, process, workdir / "results" / "DivideAssemble" / "MVTecAD" / "washer" / "v0")


def test_literal_command_trains_and_tests(trained: TrainedRun) -> None:
    assert trained.process.returncode == 0, trained.process.stderr[-3000:]
    metrics = metrics_of(trained.process.stdout)
    assert {"image_AUROC", "pixel_AUROC", "image_F1Score", "pixel_F1Score"} <= metrics.keys(), trained.process.stdout
    # Results land where MVTecAD puts them, with checkpoint and visualizations.
    assert trained.checkpoint.is_file()
    images = list((trained.results / "images").rglob("*.png"))
    assert len(images) == 8 + 8


def test_generator_loss_falls(trained: TrainedRun) -> None:
    (log,) = (trained.workdir / "logs").rglob("metrics.csv")
    with log.open() as file:
        losses = [float(row["generator_loss"]) for row in csv.DictReader(file) if row.get("generator_loss")]
    assert len(losses) == EPOCHS
    assert losses[-1] < 0.7 * losses[0], losses


def test_obvious_defects_score_above_normal_images(trained: TrainedRun) -> None:
    # 8 normal and 8 defective test images: image AUROC moves in steps of 1/64. The seeded training
    # follows other float paths on other CPUs (>= 0.9 on earlier sessions' AVX-512 machines, 0.86 on
    # an AVX2 one), so the bound is set well above chance (0.5), not at one machine's value. With the
    # default map chosen per product a fifth of the 32 training images is held out: 0.97 image and 0.88
    # pixel AUROC here (AMD EPYC), against 0.992 / 0.994 on the demo washer at its own budget.
    metrics = metrics_of(trained.process.stdout)
    assert metrics["image_AUROC"] >= 0.8, metrics
    assert metrics["pixel_AUROC"] >= 0.8, metrics


def test_reloaded_checkpoint_gives_the_same_scores(trained: TrainedRun) -> None:
    process = anomalib(
        "test", "--model", "DivideAssemble", *mvtec(trained.root), "--ckpt_path", str(trained.checkpoint),
        cwd=trained.workdir,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    before, after = metrics_of(trained.process.stdout), metrics_of(process.stdout)
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert after[name] == pytest.approx(value, abs=1e-6), name


def test_checkpoint_from_another_granularity_is_refused(trained: TrainedRun) -> None:
    process = anomalib(
        "test", "--model", "DivideAssemble", "--model.granularity", "[8,4,2,1,1]", *mvtec(trained.root),
        "--ckpt_path", str(trained.checkpoint),
        cwd=trained.workdir,
    )  # fmt: skip
    assert process.returncode != 0
    assert "granularity: checkpoint [32, 16, 8, 4, 2], this model [8, 4, 2, 1, 1]" in process.stderr
    assert "--model.granularity [32,16,8,4,2]" in process.stderr


def test_checkpoint_loads_in_python_with_the_same_scores(trained: TrainedRun) -> None:
    from anomalib_divass import DivideAssemble

    model = DivideAssemble.load_from_checkpoint(trained.checkpoint).eval()
    assert model.model.granularity == (32, 16, 8, 4, 2)
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        first, second = model(images), model(images)
    assert torch.equal(first.pred_score, second.pred_score)
    assert first.pred_label is not None  # post-processor thresholds travelled with the checkpoint


def test_missing_data_folder_names_the_flag(tmp_path: Path) -> None:
    process = anomalib(
        "train", "--model", "DivideAssemble", "--data", "MVTec", "--data.root", "nowhere", cwd=tmp_path, env=OFFLINE
    )
    assert process.returncode != 0
    assert "--data.root" in process.stderr
    assert "nowhere/bottle" in process.stderr
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("subcommand", ["train", "test", "predict", "export"])
def test_console_script_accepts_every_subcommand(subcommand: str, tmp_path: Path) -> None:
    process = anomalib(
        subcommand,
        "--model",
        "anomalib_divass.DivideAssemble",
        "--print_config",
        cwd=tmp_path,
        command="anomalib-divass",
    )
    assert process.returncode == 0, process.stderr[-2000:]
    assert "class_path: anomalib_divass.DivideAssemble" in process.stdout


def test_shipped_config_parses(tmp_path: Path) -> None:
    from anomalib_divass.configs import config_path

    config = config_path()
    process = anomalib("train", "--config", str(config), "--print_config", cwd=tmp_path, command="anomalib-divass")
    assert process.returncode == 0, process.stderr[-2000:]
    assert "class_path: anomalib_divass.DivideAssemble" in process.stdout
    assert "max_epochs:" in process.stdout


def test_plugin_costs_nothing_at_interpreter_start() -> None:
    code = (
        "import sys; print('anomalib' in sys.modules, 'torch' in sys.modules, '_anomalib_divass_hook' in sys.modules)"
    )
    process = run([sys.executable, "-c", code], cwd=Path.cwd())
    assert process.stdout.split() == ["False", "False", "True"]


def test_export_to_openvino_matches_pytorch(trained: TrainedRun) -> None:
    import numpy as np
    import openvino as ov

    from anomalib_divass import DivideAssemble

    export_root = trained.workdir / "export"
    process = anomalib(
        "export", "--model", "DivideAssemble", "--export_type", "openvino", "--ckpt_path", str(trained.checkpoint),
        "--default_root_dir", str(export_root),
        cwd=trained.workdir,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    model = DivideAssemble.load_from_checkpoint(trained.checkpoint).eval()
    compiled = ov.Core().compile_model(
        str(export_root / "weights" / "openvino" / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    images = torch.rand(2, 3, 150, 130)  # any size: the resize is part of the exported graph
    with torch.no_grad():
        expected = model(images)
    outputs = {output.get_any_name(): value for output, value in compiled(images.numpy()).items()}
    assert np.abs(outputs["pred_score"] - expected.pred_score.numpy()).max() <= 1e-4
    assert np.abs(outputs["anomaly_map"] - expected.anomaly_map.numpy()).max() <= 1e-4
    assert (outputs["pred_label"] == expected.pred_label.numpy()).all()


def test_demo_command_prints_auroc_and_where_results_are(tiny_root: Path, tmp_path: Path) -> None:
    process = anomalib(
        "demo", "--data.root", str(tiny_root), "--data.category", "washer", "--trainer.max_epochs", "1",
        cwd=tmp_path, command="anomalib-divass",
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    assert re.search(r"image_AUROC\s+[01]\.\d{3}", process.stdout)
    assert re.search(r"pixel_AUROC\s+[01]\.\d{3}", process.stdout)
    (line,) = [line for line in process.stdout.splitlines() if line.startswith("Visualizations:")]
    assert any(Path(line.split(":", 1)[1].strip()).rglob("*.png"))
    # The report's path comes last, and the report shows every test image's reconstruction.
    last = process.stdout.strip().splitlines()[-1]
    assert last.startswith("Report:"), process.stdout[-2000:]
    page = Path(last.split(":", 1)[1].split("  (")[0].strip())
    assert page.name == "index.html"
    text = page.read_text()
    assert "Reconstructions</th><td>16 of 16" in text
    assert "Image AUROC" in text


def test_predict_on_a_folder_of_images(trained: TrainedRun) -> None:
    folder = trained.root / "washer" / "test" / "paint"
    out = trained.workdir / "predict"
    process = anomalib(
        "predict", "--model", "DivideAssemble", "--ckpt_path", str(trained.checkpoint), "--data", str(folder),
        "--default_root_dir", str(out),
        cwd=trained.workdir,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    assert len(list(out.rglob("*.png"))) == len(list(folder.glob("*.png")))
