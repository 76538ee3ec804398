"""``MVTec``: anomalib's ``MVTecAD`` under its anomalib 1.x name, with offline-safe checks.

anomalib 2.7 renamed ``MVTec`` to ``MVTecAD``, so ``--data MVTec`` stopped working. This
subclass restores the name. Its ``name`` stays ``MVTecAD``, so results land where
``MVTecAD`` puts them. It also fails early and clearly when the category folder is missing
or empty (anomalib would try to download it and, offline, leave empty folders behind),
and its default ``num_workers`` follows the machine's cores instead of a fixed 8.

Its datasets (:class:`MVTecDataset`) differ from anomalib's ``MVTecADDataset`` where that one
lets bad input through:

* images are read with :func:`~anomalib_divass.data.image.read_image`: 16-bit images keep their
  range (anomalib clips them to white), one-channel images become RGB, and a corrupt file stops
  the run with its name;
* PNG, JPEG, BMP and TIFF images are found, in upper or lower case (anomalib reads ``.png`` only
  and drops the others silently);
* folder names with non-ASCII letters work (anomalib refuses them as "non-printable characters");
* each anomalous test image gets the mask named after it (``<name>_mask`` or ``<name>``), or an
  error naming the image whose mask is missing.

Example:
    >>> datamodule = MVTec(root="datasets/MVTecAD", category="bottle")
    >>> datamodule.name
    'MVTecAD'

"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from anomalib.data import MVTecAD
from anomalib.data.dataclasses import ImageItem
from anomalib.data.datasets.base.image import AnomalibDataset
from anomalib.data.datasets.image.mvtecad import MVTecADDataset
from anomalib.data.utils import LabelName, Split, TestSplitMode, ValSplitMode
from anomalib.data.utils.path import is_within_directory
from pandas import DataFrame, Series
from torchvision.transforms.v2 import Transform
from torchvision.tv_tensors import Mask

from .image import read_image, read_mask

__all__ = ["DatasetNotFoundError", "MVTec", "MVTecDataset", "check_category_folder", "make_mvtec_samples"]

# Compared in lower case: ".PNG", ".JPG", ".Tif" ... are found too.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NORMAL_LABEL = "good"
MASK_SUFFIX = "_mask"
SAMPLE_COLUMNS = ["path", "split", "label", "image_path", "mask_path", "label_index"]


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
    if not train.is_dir() or not image_files(train):
        msg = (
            f"'{folder}' has no training images: expected PNG, JPEG, BMP or TIFF files in '{train}' "
            f"(MVTec AD layout: train/good, test/<defect>, ground_truth/<defect>). {hint}."
        )
        raise DatasetNotFoundError(msg)


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (PNG, JPEG, BMP, TIFF in any case; hidden files left out), sorted."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def _masks_by_stem(folder: Path) -> dict[str, Path]:
    """The masks of one defect folder by stem (``005_mask.png`` under ``005_mask``); empty if there is none."""
    return {path.stem: path for path in image_files(folder)} if folder.is_dir() else {}


def make_mvtec_samples(category_folder: str | Path, split: str | Split | None = None) -> DataFrame:
    """The samples of an MVTec AD category folder, as anomalib's ``make_mvtec_ad_dataset`` returns them.

    Reads the layout ``train/good/*``, ``test/<good or defect>/*`` and ``ground_truth/<defect>/*``.
    Unlike anomalib's function it finds PNG, JPEG, BMP and TIFF files in any letter case, accepts any
    folder name (anomalib refuses non-ASCII letters as "non-printable characters"), and pairs each
    anomalous test image with the mask named after it. Files that resolve outside the category folder
    (escaping symbolic links) are left out, as anomalib does.

    Args:
        category_folder: ``<root>/<category>``.
        split: ``"train"``, ``"test"`` or ``None`` for both.

    Returns:
        One row per image with the columns ``path, split, label, image_path, mask_path, label_index``
        (``label_index`` 0 for ``good``, 1 for defects; ``mask_path`` ``None`` for normal images), sorted
        by ``image_path``; its ``attrs["task"]`` is ``"segmentation"``.

    Raises:
        DatasetNotFoundError: If the folder does not exist or holds no images, if a training folder other
            than ``train/good`` holds images, or if an anomalous test image has no mask.

    Example:
        >>> make_mvtec_samples("no/such/bottle")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ...
        DatasetNotFoundError: MVTec AD category folder 'no/such/bottle' does not exist. ...

    """
    folder = Path(category_folder)
    if not folder.is_dir():
        msg = (
            f"MVTec AD category folder '{folder}' does not exist. Pass --data.root with the folder that holds "
            f"the category folders and --data.category with one of them."
        )
        raise DatasetNotFoundError(msg)
    folder = folder.resolve()
    wanted = {Split.TRAIN.value, Split.TEST.value} if split is None else {Split(split).value}
    rows = []
    for split_name in sorted(wanted):
        split_folder = folder / split_name
        labels = sorted(path for path in split_folder.iterdir() if path.is_dir()) if split_folder.is_dir() else []
        for label_folder in labels:
            images = [path for path in image_files(label_folder) if is_within_directory(folder, path)]
            normal = label_folder.name == NORMAL_LABEL
            if split_name == Split.TRAIN.value and not normal and images:
                msg = (
                    f"'{label_folder}' holds training images of a defect: DivideAssemble trains on normal images "
                    f"only, from '{split_folder / NORMAL_LABEL}'. Move them to '{folder / 'test' / label_folder.name}' "
                    f"(with their masks in '{folder / 'ground_truth' / label_folder.name}') or remove them."
                )
                raise DatasetNotFoundError(msg)
            masks = {} if normal else _masks_by_stem(folder / "ground_truth" / label_folder.name)
            for image in images:
                mask = None if normal else _mask_of(image, masks, folder / "ground_truth" / label_folder.name)
                label_index = LabelName.NORMAL if normal else LabelName.ABNORMAL
                rows.append((str(folder), split_name, label_folder.name, str(image), mask, int(label_index)))
    if not rows and split in {None, Split.TRAIN, Split.TRAIN.value}:
        msg = (
            f"Found no images in '{folder}': expected PNG, JPEG, BMP or TIFF files in 'train/good', "
            f"'test/<defect>' and 'ground_truth/<defect>'."
        )
        raise DatasetNotFoundError(msg)
    samples = DataFrame(rows, columns=SAMPLE_COLUMNS)
    # Object dtype keeps None for normal images (pandas would infer strings and turn None into NaN).
    samples["mask_path"] = Series([row[4] for row in rows], dtype=object)
    samples = samples.sort_values("image_path", ignore_index=True)
    samples.attrs["task"] = "segmentation"
    return samples


def _mask_of(image: Path, masks: dict[str, Path], folder: Path) -> str:
    """The mask of an anomalous test image: ``<stem>_mask.*`` or ``<stem>.*`` in its ``ground_truth`` folder."""
    for stem in (f"{image.stem}{MASK_SUFFIX}", image.stem):
        if stem in masks:
            return str(masks[stem])
    msg = (
        f"The anomalous test image '{image}' has no mask: expected '{folder / (image.stem + MASK_SUFFIX)}.png' "
        f"(or '{image.stem}.png', any image format) in '{folder}'. Add its mask, or remove the image."
    )
    raise DatasetNotFoundError(msg)


class MVTecDataset(MVTecADDataset):
    """anomalib's ``MVTecADDataset`` that reads 16-bit, one-channel, JPEG/BMP/TIFF images and non-ASCII paths.

    The samples come from :func:`make_mvtec_samples`, the images from
    :func:`~anomalib_divass.data.image.read_image` and the masks from
    :func:`~anomalib_divass.data.image.read_mask` (a corrupt file is named). Its ``name`` is ``MVTecAD``.

    Args:
        root: Dataset root holding the category folders.
        category: Category folder name.
        augmentations: Augmentations applied to images (and masks).
        split: ``"train"``, ``"test"`` or ``None`` for both.

    Raises:
        DatasetNotFoundError: See :func:`make_mvtec_samples`.

    """

    def __init__(
        self,
        root: Path | str | None = "./datasets/MVTecAD",
        category: str = "bottle",
        augmentations: Transform | None = None,
        split: str | Split | None = None,
    ) -> None:
        # Not MVTecADDataset.__init__: it builds the samples with anomalib's path checks and PNG-only search.
        AnomalibDataset.__init__(self, augmentations=augmentations)
        self.root_category = Path("./datasets/MVTecAD" if root is None else root) / category
        self.category = category
        self.split = split
        self.samples = make_mvtec_samples(self.root_category, split)

    @property
    def name(self) -> str:
        """``MVTecAD``, as anomalib's dataset."""
        return "MVTecAD"

    def __getitem__(self, index: int) -> ImageItem:
        """The image (RGB float in ``[0, 1]``), its mask and label.

        Raises:
            ImageReadError: If the image or its mask cannot be read; the message names the file.

        """
        sample = self.samples.iloc[index]
        image = read_image(sample.image_path, as_tensor=True)
        label = int(sample.label_index)
        mask = None
        if label == LabelName.ABNORMAL:
            mask = read_mask(sample.mask_path, as_tensor=True)
        elif label == LabelName.NORMAL:
            mask = Mask(torch.zeros(image.shape[-2:], dtype=torch.uint8))
        if self.augmentations is not None:
            if mask is None:
                image = self.augmentations(image)
            else:
                image, mask = self.augmentations(image, mask)
        return ImageItem(
            image=image,
            gt_mask=mask,
            gt_label=None if label == LabelName.UNKNOWN else torch.tensor(label),
            image_path=sample.image_path,
            mask_path=sample.mask_path,
        )


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

        A failed download leaves nothing behind: neither the dataset folders it created nor the empty
        results folder of the run (see :func:`remove_empty_run_folder`).

        Raises:
            DatasetNotFoundError: If the category is missing and cannot be downloaded, or empty.

        """
        with self._no_empty_run_folder_on_error():
            folder = self.root / self.category
            if not folder.is_dir():
                created = _topmost_missing(self.root)
                try:
                    super().prepare_data()
                except OSError as error:  # URLError, timeouts, DNS failures are OSErrors
                    if created is not None:
                        shutil.rmtree(created, ignore_errors=True)
                    msg = f"Could not download MVTec AD into '{self.root}' ({error})."
                    try:
                        check_category_folder(self.root, self.category)
                    except DatasetNotFoundError as missing:
                        raise DatasetNotFoundError(f"{msg} {missing}") from error
            check_category_folder(self.root, self.category)

    def _setup(self, _stage: str | None = None) -> None:
        """Build the training and test sets as :class:`MVTecDataset` (see the module's docstring)."""
        with self._no_empty_run_folder_on_error():
            self.train_data = MVTecDataset(split=Split.TRAIN, root=self.root, category=self.category)
            self.test_data = MVTecDataset(split=Split.TEST, root=self.root, category=self.category)

    @contextlib.contextmanager
    def _no_empty_run_folder_on_error(self) -> Iterator[None]:
        """On an error, remove the results folder the engine made for this run if nothing was written in it."""
        try:
            yield
        except Exception:
            if self.trainer is not None:
                remove_empty_run_folder(self.trainer.default_root_dir)
            raise


def _topmost_missing(path: Path) -> Path | None:
    """The highest of ``path`` and its parents that does not exist (what ``mkdir(parents=True)`` would create)."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


_VERSION = re.compile(r"v\d+")
_RUN_FOLDER_DEPTH = 4  # <default_root_dir>/<model>/<dataset>/<category>/v<N>


def remove_empty_run_folder(run_folder: Any) -> None:  # noqa: ANN401  (str, Path or None)
    """Remove an empty ``<results>/<model>/<dataset>/<category>/v<N>`` folder and the empty folders above it.

    anomalib's engine creates the versioned results folder (and its ``latest`` link) before the data is
    prepared; a run that stops on a data error would leave it empty. ``latest`` is pointed back to the
    newest remaining version, or removed with the folder. Folders holding anything are left alone.

    Args:
        run_folder: The trainer's ``default_root_dir``.

    """
    if run_folder is None:
        return
    folder = Path(run_folder)
    if not _VERSION.fullmatch(folder.name) or not folder.is_dir() or any(folder.iterdir()):
        return
    latest = folder.parent / "latest"
    folder.rmdir()
    if latest.is_symlink() and not latest.exists():  # it pointed to the folder just removed
        latest.unlink()
        versions = [path for path in folder.parent.iterdir() if _VERSION.fullmatch(path.name) and path.is_dir()]
        if versions:
            latest.symlink_to(max(versions, key=lambda path: int(path.name[1:])), target_is_directory=True)
    for parent in list(folder.parents)[:_RUN_FOLDER_DEPTH]:
        try:
            parent.rmdir()  # only if empty
        except OSError:
            break
