"""Tests of the synthetic washer data set in the MVTec AD layout."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalib_divass.demo import data as demo_data
from anomalib_divass.demo.data import (
    DEFECT_TYPES,
    MAX_DEFECT_AREA,
    MIN_DEFECT_AREA,
    make_demo_category,
    render_sample,
)

SIZE = 128
SMALL = {"num_train": 6, "num_test_good": 3, "num_test_per_defect": 3, "image_size": SIZE}
# The ring's radii are 0.162-0.178 and 0.372-0.388 of the side, its centre within 0.016 of the middle.
INNER_BOUND, OUTER_BOUND = 0.14, 0.41


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _luminance(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


@pytest.fixture(scope="module")
def category(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_category(tmp_path_factory.mktemp("demo"), seed=3, **SMALL)


def test_layout_and_counts(category: Path):
    assert category.name == "washer"
    assert sorted(p.name for p in (category / "train").iterdir()) == ["good"]
    assert sorted(p.name for p in (category / "test").iterdir()) == sorted(["good", *DEFECT_TYPES])
    assert sorted(p.name for p in (category / "ground_truth").iterdir()) == sorted(DEFECT_TYPES)
    assert sorted(p.name for p in (category / "train" / "good").iterdir()) == [f"{i:03d}.png" for i in range(6)]
    assert sorted(p.name for p in (category / "test" / "good").iterdir()) == ["000.png", "001.png", "002.png"]
    for defect in DEFECT_TYPES:
        assert sorted(p.name for p in (category / "test" / defect).iterdir()) == ["000.png", "001.png", "002.png"]
        masks = sorted(p.name for p in (category / "ground_truth" / defect).iterdir())
        assert masks == ["000_mask.png", "001_mask.png", "002_mask.png"]
    for path in category.rglob("*.png"):
        with Image.open(path) as image:
            assert image.size == (SIZE, SIZE)
            assert image.mode == ("L" if path.parent.parent.name == "ground_truth" else "RGB")


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_masks_binary_non_empty_and_on_the_product(category: Path, defect: str):
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    radius = np.hypot(xx - SIZE / 2, yy - SIZE / 2) / SIZE
    for mask_path in sorted((category / "ground_truth" / defect).iterdir()):
        mask = _load(mask_path)
        image = _load(category / "test" / defect / mask_path.name.replace("_mask", ""))
        assert mask.shape == image.shape[:2]
        assert set(np.unique(mask)) <= {0, 255}
        area = (mask > 0).mean()
        assert MIN_DEFECT_AREA <= area <= MAX_DEFECT_AREA, (mask_path, area)
        on_mask = radius[mask > 0]
        assert on_mask.min() >= INNER_BOUND
        assert on_mask.max() <= OUTER_BOUND
        if defect == "notch":  # the dark background shows through the missing bite
            assert _luminance(image[mask > 0] / 255).mean() < 0.3


def test_normal_images_are_all_different(category: Path):
    images = [_load(p).astype(np.float32) / 255 for p in sorted((category / "train" / "good").iterdir())]
    images += [_load(p).astype(np.float32) / 255 for p in sorted((category / "test" / "good").iterdir())]
    for first, second in itertools.combinations(images, 2):
        assert np.abs(first - second).mean() > 0.01


def test_normal_images_look_like_a_bright_ring_on_a_dark_background(category: Path):
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    radius = np.hypot(xx - SIZE / 2, yy - SIZE / 2) / SIZE
    for path in sorted((category / "train" / "good").iterdir()):
        luminance = _luminance(_load(path) / 255)
        ring = luminance[(radius > 0.22) & (radius < 0.34)]
        assert ring.mean() > 0.4
        assert luminance[radius < 0.12].mean() < 0.2  # the hole
        assert luminance[radius > 0.45].mean() < 0.2  # around the washer
        assert ring.std() > 0.02  # texture and lighting, not a flat fill


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_defect_changes_the_image_mostly_inside_its_mask(defect: str):
    for seed in range(4):
        normal, no_mask = render_sample(np.random.default_rng(seed), SIZE, None)
        defective, mask = render_sample(np.random.default_rng(seed), SIZE, defect)
        assert not no_mask.any()
        assert mask.dtype == bool
        assert mask.shape == (SIZE, SIZE)
        difference = np.abs(defective - normal).sum(axis=-1)
        # Anti-aliased edges change a few pixels just outside the mask.
        assert difference[mask].sum() >= 0.85 * difference.sum()
        assert difference[mask].mean() > 0.1  # visible
        # On the bright product, not on the dark background (edge pixels are darker: bevel, anti-aliasing).
        assert (_luminance(normal)[mask] > 0.2).mean() > 0.95


def test_render_sample_output():
    image, mask = render_sample(np.random.default_rng(0), 64, "scratch")
    assert image.shape == (64, 64, 3)
    assert image.dtype == np.float32
    assert 0.0 <= image.min() <= image.max() <= 1.0
    assert mask.shape == (64, 64)
    assert MIN_DEFECT_AREA <= mask.mean() <= MAX_DEFECT_AREA
    with pytest.raises(ValueError, match="Unknown defect"):
        render_sample(np.random.default_rng(0), 64, "dent")


def test_same_seed_gives_identical_files(tmp_path: Path):
    settings = {"num_train": 3, "num_test_good": 1, "num_test_per_defect": 1, "image_size": 64}
    first = _files(make_demo_category(tmp_path / "a", seed=5, **settings))
    second = _files(make_demo_category(tmp_path / "b", seed=5, **settings))
    other = _files(make_demo_category(tmp_path / "c", seed=6, **settings))
    assert first == second
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first if "_mask" not in name)


def test_grayscale_and_16_bit(tmp_path: Path):
    settings = {"num_train": 2, "num_test_good": 1, "num_test_per_defect": 1, "image_size": 64}
    gray = make_demo_category(tmp_path / "gray", grayscale=True, **settings)
    deep = make_demo_category(tmp_path / "deep", bit_depth=16, **settings)
    for folder, mode in ((gray, "L"), (deep, "I;16")):
        for path in [*folder.glob("train/good/*.png"), *folder.glob("test/*/*.png")]:
            with Image.open(path) as image:
                assert image.mode == mode
        for path in folder.glob("ground_truth/*/*.png"):
            with Image.open(path) as image:
                assert image.mode == "L"
    deep_image = _load(deep / "train" / "good" / "000.png")
    assert deep_image.dtype == np.uint16
    assert deep_image.max() > 255 * 64  # spans the 16-bit range, not 8-bit values in a 16-bit file
    gray_image = _load(gray / "train" / "good" / "000.png").astype(np.float32) / 255
    assert np.abs(deep_image / 65535 - gray_image).max() < 2 / 255  # same picture


def test_complete_folder_is_not_rewritten(tmp_path: Path):
    settings = {"num_train": 3, "num_test_good": 1, "num_test_per_defect": 1, "image_size": 64}
    folder = make_demo_category(tmp_path, category="part", **settings)
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    assert make_demo_category(tmp_path, category="part", **settings) == folder
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part"]  # no staging folders left behind


def test_partial_or_changed_folder_is_regenerated(tmp_path: Path):
    settings = {"num_train": 3, "num_test_good": 1, "num_test_per_defect": 1, "image_size": 64}
    folder = make_demo_category(tmp_path, **settings)
    original = _files(folder)
    (folder / "test" / "crack" / "000.png").unlink()
    make_demo_category(tmp_path, **settings)
    assert _files(folder) == original

    make_demo_category(tmp_path, **{**settings, "num_train": 4})
    assert len(list((folder / "train" / "good").iterdir())) == 4

    make_demo_category(tmp_path, **{**settings, "num_train": 4}, defect_types=["scratch"])
    assert sorted(p.name for p in (folder / "test").iterdir()) == ["good", "scratch"]
    assert sorted(p.name for p in (folder / "ground_truth").iterdir()) == ["scratch"]


def test_interrupted_run_leaves_no_complete_looking_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    settings = {"num_train": 3, "num_test_good": 1, "num_test_per_defect": 1, "image_size": 64}
    calls = 0
    real_render = demo_data.render_sample

    def failing_render(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt
        return real_render(*args, **kwargs)

    monkeypatch.setattr(demo_data, "render_sample", failing_render)
    with pytest.raises(KeyboardInterrupt):
        make_demo_category(tmp_path, **settings)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    folder = make_demo_category(tmp_path, **settings)
    assert len(list(folder.rglob("*.png"))) == 3 + 1 + 2 * len(DEFECT_TYPES)


def test_foreign_folder_is_left_alone(tmp_path: Path):
    own = tmp_path / "washer" / "train" / "good" / "mine.png"
    own.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(own)
    with pytest.raises(FileExistsError, match="not written by make_demo_category"):
        make_demo_category(tmp_path, num_train=2, num_test_good=1, num_test_per_defect=1, image_size=64)
    assert own.exists()


def test_empty_folder_is_filled(tmp_path: Path):
    (tmp_path / "washer" / "train").mkdir(parents=True)  # as a failed download leaves it
    folder = make_demo_category(tmp_path, num_train=2, num_test_good=1, num_test_per_defect=0, image_size=64)
    assert sorted(p.name for p in (folder / "test").iterdir()) == ["good"]
    assert len(list(folder.rglob("*.png"))) == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"defect_types": ["dent"]},
        {"bit_depth": 12},
        {"num_train": 0},
        {"image_size": 16},
        {"seed": -1},
        {"category": "a/b"},
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict):
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        make_demo_category(tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []
