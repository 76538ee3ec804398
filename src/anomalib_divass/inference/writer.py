"""The CSV of folder scoring, one row per image, flushed at once and resumable; and the predicted masks.

Example:
    >>> PredictionWriter(None, ".").close()  # doctest: +SKIP

"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .stream import Failure, Prediction

__all__ = ["CSV_FIELDS", "PredictionWriter", "holds_results", "save_mask"]


class PredictionWriter:
    """The CSV of a folder run, one row per image appended and flushed as it comes, and the masks.

    Columns: ``image, pred_score, pred_label, anomalous_fraction, error`` (``error`` is empty for scored
    images; unreadable ones have only ``image`` and ``error``). Rows are flushed one by one, so an
    interrupted run keeps every image it scored, and a rerun with ``resume=True`` skips them. Images that
    failed before (:attr:`failed_before`) are tried again on resume: :meth:`forget` drops their old rows
    first, so the CSV keeps one row per image, its latest result.

    Args:
        path: The CSV.
        root: Folder that mask paths are made relative to.
        masks: Folder for predicted masks (PNG at the image size), or ``None``.
        resume: Append to an existing CSV (after checking its header) instead of replacing it.

    Raises:
        ValueError: If ``resume`` is set and the file is not a prediction CSV of this command.

    """

    def __init__(self, path: str | Path, root: Path, masks: str | Path | None = None, resume: bool = False) -> None:
        self.path = Path(path)
        self.root = root
        self.masks = None if masks is None else Path(masks)
        self.done, self.failed_before = _images_in(self.path) if resume else (set(), set())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (self.done or self.failed_before) and not (
            resume and self.path.is_file() and self.path.stat().st_size
        )
        self._file = self.path.open("w" if fresh else "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        if fresh:
            self._writer.writerow(CSV_FIELDS)
            self._file.flush()

    def write(self, result: Prediction | Failure) -> None:
        """Append one row (and save the mask), flushed to the file at once."""
        if isinstance(result, Failure):
            self._writer.writerow([str(result.image), "", "", "", result.error])
        else:
            if self.masks is not None:
                save_mask(result, self.root, self.masks)
            self._writer.writerow(
                [
                    str(result.image),
                    f"{result.pred_score:.6f}",
                    int(result.pred_label),
                    f"{result.anomalous_fraction:.6f}",
                    "",
                ]
            )
        self._file.flush()

    def forget(self, images: Iterable[str | Path]) -> int:
        """Drop the rows of ``images`` (e.g. failures about to be retried), replacing the CSV atomically.

        The rows left are copied to a temporary file next to the CSV that then replaces it, so an interruption
        leaves either the old or the new file, never a half-written one.

        Args:
            images: Image paths (compared as absolute paths).

        Returns:
            How many rows were dropped.

        """
        drop = {os.path.abspath(image) for image in images}
        if not drop:
            return 0
        self._file.close()
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        dropped = 0
        try:
            with (
                self.path.open(newline="", encoding="utf-8") as source,
                temporary.open("w", newline="", encoding="utf-8") as target,
            ):
                writer = csv.writer(target)
                for row in csv.reader(source):
                    if row and row != list(CSV_FIELDS) and os.path.abspath(row[0]) in drop:
                        dropped += 1
                        continue
                    writer.writerow(row)
                target.flush()
                os.fsync(target.fileno())
            os.replace(temporary, self.path)
        finally:
            temporary.unlink(missing_ok=True)
            self._file = self.path.open("a", newline="", encoding="utf-8")
            self._writer = csv.writer(self._file)
        self.done -= drop
        self.failed_before -= drop
        return dropped

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> PredictionWriter:  # noqa: D105
        return self

    def __exit__(self, *exc: object) -> None:  # noqa: D105
        self.close()


CSV_FIELDS = ("image", "pred_score", "pred_label", "anomalous_fraction", "error")


def holds_results(path: Path) -> bool:
    """Whether replacing ``path`` would lose anything (a run stopped before its first image loses nothing)."""
    if not path.is_file():
        return False
    with path.open(newline="", encoding="utf-8", errors="replace") as file:
        first = file.readline()
        return first.rstrip("\r\n") != ",".join(CSV_FIELDS) or bool(file.readline())


def _images_in(path: Path) -> tuple[set[str], set[str]]:
    """Absolute paths of the images an existing prediction CSV holds: ``(scored, failed)``.

    An image whose latest row is an error counts as failed only. A last line cut off by an interruption is
    removed from the file, so that the rerun scores it again.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return set(), set()
    with path.open("r+", newline="", encoding="utf-8") as file:
        text = file.read()
        if not text.endswith("\n"):  # a row torn by a kill: drop it
            file.seek(0)
            file.truncate(text.rfind("\n") + 1)
            text = text[: text.rfind("\n") + 1]
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None:
        return set(), set()
    if tuple(header) != CSV_FIELDS:
        msg = (
            f"'{path}' is not a prediction CSV of this command (its columns are {header}, expected "
            f"{list(CSV_FIELDS)}); cannot resume from it. Pass another --output, or delete the file."
        )
        raise ValueError(msg)
    failed = {os.path.abspath(row[0]): bool(row[-1]) for row in rows if row}  # image -> its latest row is an error
    return {image for image, error in failed.items() if not error}, {image for image, error in failed.items() if error}


def save_mask(prediction: Prediction, root: Path, masks: Path) -> Path:
    """Save a prediction's mask as a PNG at the image's size, under ``masks`` with the image's path below ``root``.

    Args:
        prediction: A prediction with its ``pred_mask`` ``(h, w)``.
        root: The folder the image was found in.
        masks: The mask folder.

    Returns:
        The PNG written.

    """
    from PIL import Image  # noqa: PLC0415

    path = masks / prediction.image.relative_to(root).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = prediction.pred_mask
    picture = Image.fromarray(mask.astype(np.uint8) * 255)
    if tuple(prediction.size) != mask.shape:
        picture = picture.resize((prediction.size[1], prediction.size[0]), Image.Resampling.NEAREST)
    picture.save(path)
    return path
