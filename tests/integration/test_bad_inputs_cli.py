"""Bad inputs on the real ``anomalib`` command line: refused before anything runs, named, nothing left behind.

Each test runs one command on a tiny generated category; the commands that must fail stop before training.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_helpers import OFFLINE, anomalib, flat, metrics_of, mvtec

from anomalib_divass.demo.data import make_demo_category

pytestmark = pytest.mark.integration

TINY_MODEL = ["--model.channels", "[8,16]", "--model.granularity", "[2,1]", "--model.num_items", "8"]
QUICK = ["--data.train_batch_size", "8", "--data.num_workers", "0", "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A washer category of 8 training and 3 test images (64 x 64), in a folder with non-ASCII letters."""
    root = tmp_path_factory.mktemp("data") / "ünï" / "Prüfstand"
    make_demo_category(root, "washer", 8, 2, 1, image_size=64, defect_types=("stain",))
    return root


def train(root: Path, *flags: str, cwd: Path) -> tuple[int, str, str]:
    process = anomalib("train", "--model", "DivideAssemble", *TINY_MODEL, *mvtec(root), *QUICK, *flags, cwd=cwd)
    return process.returncode, process.stdout, flat(process.stderr)


def test_non_ascii_dataset_folder_trains_and_tests(small_root: Path, tmp_path: Path) -> None:
    # anomalib 2.7: "Path contains non-printable characters", and an empty results folder left behind.
    code, out, err = train(small_root, "--trainer.max_epochs", "1", cwd=tmp_path)
    assert code == 0, err[-3000:]
    assert {"image_AUROC", "pixel_AUROC"} <= metrics_of(out).keys(), out[-2000:]
    assert list((tmp_path / "results").rglob("model.ckpt"))


def test_zero_epochs_is_refused_without_printing_metrics(small_root: Path, tmp_path: Path) -> None:
    code, out, err = train(small_root, "--trainer.max_epochs", "0", cwd=tmp_path)
    assert code != 0
    assert "--trainer.max_epochs 0 trains nothing" in err
    assert not metrics_of(out)  # no test metrics of an untrained model
    assert not list(tmp_path.rglob("*.ckpt"))


def test_negative_latent_weight_is_refused_with_its_range(small_root: Path, tmp_path: Path) -> None:
    code, out, err = train(small_root, "--model.latent_weight", "-1", "--trainer.max_epochs", "1", cwd=tmp_path)
    assert code != 0
    assert "--model.latent_weight must lie in [0.0," in err
    assert "got -1" in err
    assert not metrics_of(out)


def test_truncated_checkpoint_is_named_before_lightning_reads_it(small_root: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"model.autoencoder.weight": torch.zeros(64, 64)}}, checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:2000])  # a copy that stopped early
    process = anomalib(
        "test", "--model", "DivideAssemble", *mvtec(small_root), "--ckpt_path", str(checkpoint), cwd=tmp_path
    )
    message = flat(process.stderr)
    assert process.returncode == 2
    assert f"'{checkpoint}' is corrupt or incomplete" in message
    assert "PytorchStreamReader" not in message


def test_train_without_data_root_leaves_nothing_behind(tmp_path: Path) -> None:
    # anomalib's default root is ./datasets/MVTecAD: its download fails offline.
    process = anomalib("train", "--model", "DivideAssemble", "--data", "MVTec", cwd=tmp_path, env=OFFLINE)
    assert process.returncode != 0
    assert "--data.root" in flat(process.stderr)
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # no datasets/, no empty results/
