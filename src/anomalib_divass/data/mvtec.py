"""``MVTec``: anomalib's ``MVTecAD`` under its anomalib 1.x name, with offline-safe checks.

anomalib 2.7 renamed ``MVTec`` to ``MVTecAD``, so ``--data MVTec`` stopped working. This
subclass restores the name. Its ``name`` stays ``MVTecAD``, so results land where
``MVTecAD`` puts them. It also fails early and clearly when the category folder is missing
or empty (anomalib would try to download it and, offline, leave an empty folder behind),
and its default ``num_workers`` follows the machine's cores instead of a fixed 8.

Example:
    >>> datamodule = MVTec(root="datasets/MVTecAD", category="bottle")
    >>> datamodule.name
    'MVTecAD'

"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from anomalib.data import MVTecAD
from anomalib.data.utils import TestSplitMode, ValSplitMode
from torchvision.transforms.v2 import Transform

__all__ = ["DatasetNotFoundError", "MVTec", "check_category_folder"]

IMAGE_SUFFIXES = (".png",)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset folder is missing, empty or not in the MVTec AD layout."""


def default_num_workers() -> int:
    """Data-loading workers for this machine: one per core, at most 8."""
    return max(1, min(8, (os.cpu_count() or 1)))


def check_category_folder(root: Path, category: str) -> None:
    """Check that ``root/category`` holds an MVTec AD category with training images.

    Args:
        root: Dataset root (``--data.root``).
        category: Category folder name (``--data.category``).

    Raises:
        DatasetNotFoundError: Naming the folder, what is missing and the flags to fix it.

    """
    folder = root / category
    train = folder / "train" / "good"
    hint = (
        "Pass --data.root with the folder that holds the category folders of a local MVTec AD copy "
        "(for example --data.root ../shared/datasets/mvtec_ad) and --data.category with one of them"
    )
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        where = f"; categories there: {', '.join(found)}" if found else ""
        msg = f"MVTec AD category folder '{folder}' does not exist{where}. {hint}."
        raise DatasetNotFoundError(msg)
    if not train.is_dir() or not any(p.suffix.lower() in IMAGE_SUFFIXES for p in train.iterdir()):
        msg = (
            f"'{folder}' has no training images: expected PNG files in '{train}' "
            f"(MVTec AD layout: train/good, test/<defect>, ground_truth/<defect>). {hint}."
        )
        raise DatasetNotFoundError(msg)


class MVTec(MVTecAD):
    """MVTec AD data module, accepted as ``--data MVTec``; see ``anomalib.data.MVTecAD``.

    Args:
        root: Dataset root holding the category folders.
        category: Category folder name.
        train_batch_size: Training batch size.
        eval_batch_size: Validation and test batch size.
        num_workers: Data-loading workers; ``None`` uses one per core (at most 8).
        train_augmentations: Augmentations of training images.
        val_augmentations: Augmentations of validation images.
        test_augmentations: Augmentations of test images.
        augmentations: Augmentations of every split.
        test_split_mode: How the test set is made.
        test_split_ratio: Fraction of normal images moved to the test set, if split.
        val_split_mode: How the validation set is made (a copy of the test set by default).
        val_split_ratio: Fraction of the test set used for validation, if split.
        seed: Random seed of the splits.

    """

    def __init__(
        self,
        root: Path | str | None = "./datasets/MVTecAD",
        category: str = "bottle",
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int | None = None,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.SAME_AS_TEST,
        val_split_ratio: float = 0.5,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            root=root,
            category=category,
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=default_num_workers() if num_workers is None else num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            test_split_mode=test_split_mode,
            test_split_ratio=test_split_ratio,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            seed=seed,
        )

    @property
    def name(self) -> str:
        """``MVTecAD``, so that results paths are those of anomalib's ``MVTecAD``."""
        return "MVTecAD"

    def prepare_data(self) -> None:
        """Use the local category; download it only when missing and a network answers.

        Raises:
            DatasetNotFoundError: If the category is missing and cannot be downloaded, or empty.

        """
        folder = self.root / self.category
        if not folder.is_dir():
            root_existed = self.root.exists()
            try:
                super().prepare_data()
            except OSError as error:  # URLError, timeouts, DNS failures are OSErrors
                if not root_existed:
                    shutil.rmtree(self.root, ignore_errors=True)
                msg = f"Could not download MVTec AD into '{self.root}' ({error})."
                try:
                    check_category_folder(self.root, self.category)
                except DatasetNotFoundError as missing:
                    raise DatasetNotFoundError(f"{msg} {missing}") from error
        check_category_folder(self.root, self.category)
