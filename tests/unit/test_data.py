"""Data: the MVTec alias, missing folders, corrupt files, grayscale and 16-bit images."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data.datasets.base import image as anomalib_image_dataset
from anomalib.data.datasets.image.mvtecad import MVTecADDataset
from anomalib.data.utils import image as anomalib_image_utils
from PIL import Image

from anomalib_divass import MVTec
from anomalib_divass.data import DatasetNotFoundError, ImageReadError, MVTecDataset, read_image, read_mask
from anomalib_divass.data.mvtec import check_category_folder
from anomalib_divass.demo.data import make_demo_category


def test_alias_keeps_mvtecad_results_paths() -> None:
    datamodule = MVTec(root="somewhere", category="bottle")
    assert datamodule.name == "MVTecAD"
    assert 1 <= datamodule.num_workers <= 8


def test_missing_category_names_the_flag_and_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "bottle").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"'.*cable' does not exist; categories there: bottle.*--data.root"):
        check_category_folder(tmp_path, "cable")


def test_empty_category_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bottle" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="has no training images"):
        check_category_folder(tmp_path, "bottle")


def test_eight_bit_images_read_as_anomalib_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "rgb.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    expected = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
    assert torch.allclose(read_image(path, as_tensor=True), expected)
    assert np.allclose(read_image(path), np.asarray(Image.open(path).convert("RGB")) / 255.0)


def test_sixteen_bit_images_keep_their_range(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    image = read_image(path, as_tensor=True)
    assert image.shape == (3, 64, 64)
    assert image.min() == 0
    assert image.max() == pytest.approx(1.0)
    assert image.mean() == pytest.approx(0.5, abs=0.01)  # anomalib's own reader saturates: mean ~1.0


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(good)
    path.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ImageReadError, match=r"Cannot read image file '.*broken.png'"):
        read_image(path, as_tensor=True)
    with pytest.raises(ImageReadError, match=r"Cannot read mask file '.*broken.png'.*replace it"):
        read_mask(path, as_tensor=True)
    # Importing the plugin changes nothing in anomalib: its datasets keep their own reader.
    assert anomalib_image_dataset.read_image is anomalib_image_utils.read_image


def test_corrupt_mask_stops_with_its_name(tmp_path: Path) -> None:
    make_demo_category(tmp_path, "washer", 2, 1, 1, image_size=32, defect_types=("stain",))
    (mask,) = (tmp_path / "washer" / "ground_truth").rglob("*_mask.png")
    mask.write_bytes(mask.read_bytes()[:40])
    dataset = MVTecDataset(root=tmp_path, category="washer", split="test")
    with pytest.raises(ImageReadError, match=re.escape(mask.name)):
        [dataset[index] for index in range(len(dataset))]


def test_eight_bit_dataset_reads_as_anomalib_reads_it(tmp_path: Path) -> None:
    make_demo_category(tmp_path, "washer", num_train=3, num_test_good=2, num_test_per_defect=1, image_size=32)
    for split in ("train", "test"):
        ours = MVTecDataset(root=tmp_path, category="washer", split=split)
        theirs = MVTecADDataset(root=tmp_path, category="washer", split=split)
        assert ours.name == theirs.name == "MVTecAD"
        assert ours.task == theirs.task
        assert ours.samples.to_dict("list") == theirs.samples.to_dict("list")
        for index in range(len(theirs)):
            mine, expected = ours[index], theirs[index]
            assert torch.equal(mine.image, expected.image)
            assert torch.equal(mine.gt_mask, expected.gt_mask)
            assert torch.equal(mine.gt_label, expected.gt_label)
            assert (mine.image_path, mine.mask_path) == (expected.image_path, expected.mask_path)


def test_corrupt_training_image_stops_with_its_name(tmp_path: Path) -> None:
    make_demo_category(tmp_path, "washer", num_train=4, num_test_good=1, num_test_per_defect=1, image_size=64)
    victim = tmp_path / "washer" / "train" / "good" / "002.png"
    victim.write_bytes(b"not a png")
    datamodule = MVTec(root=tmp_path, category="washer", num_workers=0)
    datamodule.prepare_data()
    datamodule.setup("fit")
    dataset = datamodule.train_data
    with pytest.raises(ImageReadError, match=r"002\.png"):
        [dataset[index] for index in range(len(dataset))]


@pytest.mark.parametrize(("grayscale", "bit_depth"), [(True, 8), (True, 16)])
def test_one_channel_and_sixteen_bit_datasets_train_and_test(tmp_path: Path, grayscale: bool, bit_depth: int) -> None:
    from anomalib.engine import Engine

    from anomalib_divass import DivideAssemble

    make_demo_category(
        tmp_path, "washer", 8, 2, 1, image_size=64, grayscale=grayscale, bit_depth=bit_depth, defect_types=("stain",)
    )
    datamodule = MVTec(root=tmp_path, category="washer", train_batch_size=4, eval_batch_size=4, num_workers=0)
    datamodule.prepare_data()
    datamodule.setup("fit")
    image = datamodule.train_data[0].image
    assert image.shape[0] == 3
    assert 0.05 < float(image.mean()) < 0.9  # not saturated by an 8-bit conversion
    model = DivideAssemble(channels=[8, 16, 16], granularity=[4, 2, 1], num_items=8, visualizer=False)
    engine = Engine(max_epochs=1, accelerator="cpu", logger=False, default_root_dir=tmp_path / "results")
    engine.fit(model, datamodule=datamodule)
    (metrics,) = engine.test(model, datamodule=datamodule)
    assert 0.0 <= metrics["image_AUROC"] <= 1.0
    assert np.isfinite(metrics["pixel_AUROC"])
