"""Shared fixtures: tiny generated datasets in MVTec layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalib_divass.demo.data import make_demo_category, render_sample


def add_obvious_defects(root: Path, category: str, count: int, image_size: int, seed: int = 99) -> None:
    """Write ``count`` washers with a large red paint blot (and masks) as ``test/paint``."""
    rng = np.random.default_rng(seed)
    images = root / category / "test" / "paint"
    masks = root / category / "ground_truth" / "paint"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rows, columns = np.mgrid[:image_size, :image_size]
    for index in range(count):
        image, _ = render_sample(rng, image_size, None)
        angle = rng.uniform(0, 2 * np.pi)
        center = image_size / 2 + 0.35 * image_size * np.array([np.sin(angle), np.cos(angle)])
        mask = (rows - center[0]) ** 2 + (columns - center[1]) ** 2 < (0.1 * image_size) ** 2
        image[mask] = (0.9, 0.1, 0.1)
        Image.fromarray((image * 255).astype(np.uint8)).save(images / f"{index:03d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(masks / f"{index:03d}_mask.png")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small washer category: 32 normal training images, 8 normal and 8 painted test images."""
    root = tmp_path_factory.mktemp("tiny")
    make_demo_category(root, "washer", num_train=32, num_test_good=8, num_test_per_defect=0, image_size=128, seed=3)
    add_obvious_defects(root, "washer", count=8, image_size=128)
    return root
