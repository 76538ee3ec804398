"""Bad inputs that used to slip through: each is now refused with a message naming the fix, or simply works.

Resumed folder runs that kept stale error rows, out-of-range model arguments, truncated checkpoints, dataset
folders with non-ASCII names or JPEG/BMP/TIFF images, test sets without anomalies, a failed download that
left empty folders behind.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import urllib.error
from pathlib import Path

import pytest
import torch
from anomalib.data import ImageBatch
from anomalib.metrics import AUROC
from PIL import Image

from anomalib_divass import DivideAssemble, MVTec
from anomalib_divass.data import DatasetNotFoundError, MVTecDataset
from anomalib_divass.data.mvtec import check_category_folder, remove_empty_run_folder
from anomalib_divass.demo.data import make_demo_category
from anomalib_divass.inference import Failure, Prediction, PredictionWriter
from anomalib_divass.inference.writer import CSV_FIELDS
from anomalib_divass.models.divide_assemble.checkpoint import CorruptCheckpointError, check_checkpoint_path
from anomalib_divass.models.divide_assemble.metrics import DefinedAUROC

TINY = {"channels": [8, 16], "granularity": [2, 1], "num_items": 8, "visualizer": False}


def tiny_model() -> DivideAssemble:
    return DivideAssemble(**TINY, pre_processor=DivideAssemble.configure_pre_processor((64, 64)))


def fit_and_test(root: Path, category: str = "washer") -> dict[str, float]:
    from anomalib.engine import Engine

    datamodule = MVTec(root=root, category=category, train_batch_size=8, eval_batch_size=8, num_workers=0)
    model = tiny_model()
    engine = Engine(
        max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=root / "results"
    )
    engine.fit(model, datamodule=datamodule)
    (metrics,) = engine.test(model, datamodule=datamodule, verbose=False)
    return metrics


# --------------------------------------------------------------------------- 1. resume retries failed images


def rows_of(path: Path) -> list[list[str]]:
    with path.open(newline="") as file:
        return list(csv.reader(file))


def test_resume_replaces_the_error_row_of_a_retried_image(tmp_path: Path) -> None:
    output, good, fixed = tmp_path / "scores.csv", tmp_path / "good.png", tmp_path / "fixed.png"
    with PredictionWriter(output, tmp_path) as writer:
        writer.write(Prediction(good, 0.25, False, 0.0, None, None))
        writer.write(Failure(fixed, f"Cannot read image file '{fixed}': truncated"))

    writer = PredictionWriter(output, tmp_path, resume=True)
    assert writer.done == {str(good)}
    assert writer.failed_before == {str(fixed)}  # to be tried again, not skipped
    assert writer.forget([fixed]) == 1
    writer.write(Prediction(fixed, 0.75, True, 0.5, None, None))  # the user replaced the file
    writer.close()

    rows = rows_of(output)
    assert rows[0] == list(CSV_FIELDS)
    assert rows[1:] == [[str(good), "0.250000", "0", "0.000000", ""], [str(fixed), "0.750000", "1", "0.500000", ""]]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["scores.csv"]  # no temporary file left
    again = PredictionWriter(output, tmp_path, resume=True)
    again.close()
    assert again.done == {str(good), str(fixed)}
    assert not again.failed_before


# --------------------------------------------------------------------------- 3. model arguments


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("latent_weight", -1.0),
        ("sigma", -0.5),
        ("sigma", 1000.0),
        ("temperature", 0.0),
        ("temperature", -0.05),
        ("temperature", math.nan),
        ("shrink_threshold", -0.1),
        ("shrink_threshold", 1.5),
        ("shrink_threshold", 1.0),
        ("score_top_fraction", 0.0),
        ("score_top_fraction", 1.5),
        ("lr", 0.0),
    ],
)
def test_out_of_range_model_argument_names_its_valid_range(name: str, value: float) -> None:
    valid_range = r"[\[(]-?[0-9.]+, ([0-9.]+|inf)[\])]"
    with pytest.raises(ValueError, match=rf"--model\.{name} must lie in {valid_range}, got {re.escape(str(value))}"):
        DivideAssemble(pre_processor=False, **{name: value})


# --------------------------------------------------------------------------- 5. truncated checkpoints


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"model.autoencoder.weight": torch.zeros(64, 64)}}, path)
    return path


def test_truncated_checkpoint_is_named_as_corrupt(checkpoint: Path) -> None:
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])  # a copy that stopped half-way
    with pytest.raises(CorruptCheckpointError, match=rf"'{re.escape(str(checkpoint))}' is corrupt or incomplete"):
        DivideAssemble.load_from_checkpoint(checkpoint)


@pytest.mark.parametrize(("content", "problem"), [(b"", "the file is empty"), (b"<html>", "it is not a file written")])
def test_empty_or_foreign_checkpoint_is_named_as_corrupt(checkpoint: Path, content: bytes, problem: str) -> None:
    checkpoint.write_bytes(content)
    with pytest.raises(
        CorruptCheckpointError, match=rf"model\.ckpt' is corrupt or incomplete \({problem}.*--ckpt_path"
    ):
        check_checkpoint_path(checkpoint)


def test_complete_checkpoints_pass_the_check(checkpoint: Path, tmp_path: Path) -> None:
    assert check_checkpoint_path(checkpoint) == checkpoint.resolve()
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": {}}, legacy, _use_new_zipfile_serialization=False)
    assert check_checkpoint_path(legacy) == legacy.resolve()


# --------------------------------------------------------------------------- 4, 6. dataset folders


def to_format(path: Path, suffix: str) -> Path:
    """Re-save an image (PNG) in the format ``suffix`` names, and delete the PNG."""
    target = path.with_suffix(suffix)
    with Image.open(path) as image:
        image.convert("RGB").save(
            target, format={".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}.get(suffix.lower(), "TIFF")
        )
    path.unlink()
    return target


MIXED = [".jpg", ".JPG", ".jpeg", ".bmp", ".BMP", ".tif", ".TIFF"]


def mixed_category(root: Path) -> Path:
    """A washer category whose images are PNG, JPEG, BMP and TIFF files in both letter cases."""
    folder = make_demo_category(root, "washer", 12, 2, 2, image_size=64, defect_types=("stain",))
    (folder / ".demo_data.json").unlink()
    train = sorted((folder / "train" / "good").glob("*.png"))
    for path, suffix in zip(train, MIXED, strict=False):
        to_format(path, suffix)
    to_format(folder / "test" / "stain" / "000.png", ".bmp")  # its mask stays 000_mask.png
    to_format(folder / "test" / "good" / "001.png", ".jpg")
    return folder


def test_jpeg_bmp_and_tiff_images_are_read_in_any_letter_case(tmp_path: Path) -> None:
    folder = mixed_category(tmp_path)
    train = MVTecDataset(root=tmp_path, category="washer", split="train")
    assert len(train) == 12  # anomalib's MVTecADDataset finds only the 5 PNG files
    assert sorted({Path(path).suffix for path in train.samples.image_path}) == sorted({".png", *MIXED})
    test = MVTecDataset(root=tmp_path, category="washer", split="test")
    assert len(test) == 4
    stain = test.samples[test.samples.label == "stain"]
    assert [Path(path).name for path in stain.mask_path] == ["000_mask.png", "001_mask.png"]
    for dataset in (train, test):
        for index in range(len(dataset)):
            item = dataset[index]
            assert item.image.shape == (3, 64, 64)
            assert 0.02 < float(item.image.mean()) < 0.98
    only_jpeg = tmp_path / "jpeg" / "washer" / "train" / "good"
    only_jpeg.mkdir(parents=True)
    with Image.open(next((folder / "train" / "good").glob("*.png"))) as image:
        image.convert("RGB").save(only_jpeg / "000.JPEG", format="JPEG")
    check_category_folder(tmp_path / "jpeg", "washer")  # a category of JPEG files is not "empty"


def test_missing_mask_names_the_image_and_the_expected_mask(tmp_path: Path) -> None:
    folder = make_demo_category(tmp_path, "washer", 2, 1, 2, image_size=32, defect_types=("stain",))
    (folder / "ground_truth" / "stain" / "001_mask.png").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"'.*test/stain/001\.png' has no mask: expected '.*001_mask\.png'"):
        MVTecDataset(root=tmp_path, category="washer", split="test")


def test_non_ascii_folder_and_mixed_formats_train_and_test(tmp_path: Path) -> None:
    root = tmp_path / "ünï" / "Prüfstand 東京"
    mixed_category(root)
    datamodule = MVTec(root=root, category="washer", num_workers=0)
    datamodule.prepare_data()
    datamodule.setup("fit")  # anomalib: "Path contains non-printable characters"
    assert len(datamodule.train_data) == 12
    metrics = fit_and_test(root)
    assert 0.0 <= metrics["image_AUROC"] <= 1.0
    assert list((root / "results").rglob("model.ckpt"))


# --------------------------------------------------------------------------- 7. AUROC of a one-class test set


def scored_batch(labels: list[int]) -> ImageBatch:
    scores = torch.linspace(0.1, 0.9, len(labels))
    return ImageBatch(image=torch.zeros(len(labels), 3, 8, 8), pred_score=scores, gt_label=torch.tensor(labels))


def test_auroc_of_one_class_is_nan_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    reference = AUROC(fields=["pred_score", "gt_label"], prefix="image_")
    reference.update(scored_batch([0, 0, 0, 0]))
    assert float(reference.compute()) == 0.0  # anomalib's: a score for a quantity that does not exist

    metric = DefinedAUROC(fields=["pred_score", "gt_label"], prefix="image_")
    assert metric.name == "image_AUROC"
    metric.update(scored_batch([0, 0, 0, 0]))
    with caplog.at_level(logging.WARNING):
        assert math.isnan(float(metric.compute()))
    assert "image_AUROC is undefined and reported as NaN" in caplog.text
    assert "every one of the 4 images scored is normal" in caplog.text

    both = DefinedAUROC(fields=["pred_score", "gt_label"], prefix="image_")
    reference = AUROC(fields=["pred_score", "gt_label"], prefix="image_")
    for each in (both, reference):
        each.update(scored_batch([0, 1, 0, 1]))
    assert float(both.compute()) == pytest.approx(float(reference.compute()))


def test_test_set_without_anomalies_reports_auroc_as_undefined(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_demo_category(tmp_path, "washer", 8, 4, 0, image_size=64, defect_types=())
    with caplog.at_level(logging.WARNING):
        metrics = fit_and_test(tmp_path)
    assert math.isnan(metrics["image_AUROC"])  # anomalib's AUROC printed 0.0
    assert math.isnan(metrics["pixel_AUROC"])
    assert "image_AUROC is undefined" in caplog.text


# --------------------------------------------------------------------------- 9. nothing left behind


def test_failed_download_leaves_no_folder_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from anomalib.data.datamodules.image import mvtecad

    def offline(root: Path, info: object) -> None:
        root.mkdir(parents=True, exist_ok=True)  # as anomalib's download does, before it fails
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(mvtecad, "download_and_extract", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"Could not download MVTec AD.*--data\.root"):
        MVTec().prepare_data()  # the default root: ./datasets/MVTecAD
    assert list(tmp_path.iterdir()) == []


def test_empty_run_folder_is_removed_and_latest_points_back(tmp_path: Path) -> None:
    category = tmp_path / "results" / "DivideAssemble" / "MVTecAD" / "washer"
    (category / "v0" / "weights").mkdir(parents=True)
    (category / "v1").mkdir()
    (category / "latest").symlink_to(category / "v1", target_is_directory=True)
    remove_empty_run_folder(category / "v1")
    assert sorted(path.name for path in category.iterdir()) == ["latest", "v0"]
    assert (category / "latest").resolve() == (category / "v0").resolve()
    remove_empty_run_folder(category / "v0")  # holds something: left alone
    assert (category / "v0" / "weights").is_dir()
    (category / "v0" / "weights").rmdir()
    remove_empty_run_folder(category / "v0")
    assert list(tmp_path.iterdir()) == []
