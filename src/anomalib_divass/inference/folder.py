"""Score a folder: the stream of :mod:`.stream` written by :mod:`.writer` (CSV, masks), resumable.

Example:
    >>> score_folder("model.xml", "images/", "predictions.csv", resume=True)  # doctest: +SKIP

"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model import OpenVINOModel, Precision
from .stream import Failure, Prediction, list_images, stream_predictions, throughput_model
from .writer import PredictionWriter, holds_results, save_mask

__all__ = ["FolderSummary", "predict_folder", "score_folder"]


@dataclass
class FolderSummary:
    """What :func:`score_folder` did.

    Attributes:
        scored: Images scored in this run.
        anomalous: Of these, images labelled anomalous.
        failed: Unreadable images skipped in this run (also in the CSV, with the error).
        resumed: Images skipped because the CSV already held their scores (``resume=True``).
        output: The CSV.
        retried: Images tried again because the CSV held an error for them (``resume=True``); their old
            rows were replaced by this run's.

    """

    scored: int
    anomalous: int
    failed: list[Failure]
    resumed: int
    output: Path
    retried: int = 0


def score_folder(
    model: str | Path | OpenVINOModel,
    folder: str | Path,
    output: str | Path,
    masks: str | Path | None = None,
    precision: Precision = "auto",
    device: str = "CPU",
    resize: bool = True,
    workers: int | None = None,
    resume: bool = False,
    config: Mapping[str, Any] | None = None,
    on_result: Callable[[Prediction | Failure], None] | None = None,
) -> FolderSummary:
    """Score a folder of any size into a CSV written as it goes; memory does not grow with the folder.

    Images are read by a pool of threads while OpenVINO runs in throughput mode (see
    :func:`stream_predictions`); every result is appended to ``output`` and flushed at once (see
    :class:`PredictionWriter`). An unreadable image is reported (log and CSV) and skipped.

    Args:
        model: Exported ``.xml``/``.onnx`` file or a loaded :class:`OpenVINOModel`.
        folder: Folder of images (searched recursively) or one image.
        output: The CSV.
        masks: Folder to write the predicted masks to (PNG, image size, same relative paths), or ``None``.
        precision: See :class:`OpenVINOModel`.
        device: OpenVINO device.
        resize: Resize images like training before the graph (see :class:`OpenVINOModel`).
        workers: Reader threads (default: the number of CPUs, at most 8).
        resume: Keep the scored rows of an existing ``output`` and score only the other images, retrying those
            it holds an error for (a file replaced since): their error rows are replaced, one row per image.
        config: Further OpenVINO properties.
        on_result: Called with each result as it is written (e.g. to print progress).

    Returns:
        What was scored, skipped and resumed.

    Raises:
        FileExistsError: If ``output`` holds results (or another file) and ``resume`` is not set: it is never
            silently replaced. A CSV holding only the header (a run stopped before its first image) is.

    Example:
        >>> score_folder("model.xml", "images/", "predictions.csv", resume=True)  # doctest: +SKIP
        FolderSummary(scored=9000, anomalous=12, failed=[], resumed=1000, output=PosixPath('predictions.csv'), ...)

    """
    output = Path(output)
    if not resume and holds_results(output):
        msg = (
            f"'{output}' already exists. Pass --resume to score only the images it does not hold yet, or "
            f"remove it (or choose another --output) to start again."
        )
        raise FileExistsError(msg)
    images = list_images(folder)
    root = Path(folder) if Path(folder).is_dir() else Path(folder).parent
    inferencer = throughput_model(model, precision, device, resize, config)
    scored = anomalous = 0
    failed: list[Failure] = []
    with PredictionWriter(output, root, masks, resume=resume) as writer:
        todo = [path for path in images if os.path.abspath(path) not in writer.done]
        retried = writer.forget(path for path in todo if os.path.abspath(path) in writer.failed_before)
        for result in stream_predictions(inferencer, todo, workers, keep_masks=masks is not None):
            writer.write(result)
            if isinstance(result, Failure):
                failed.append(result)
            else:
                scored += 1
                anomalous += result.pred_label
            if on_result is not None:
                on_result(result)
    return FolderSummary(scored, anomalous, failed, len(images) - len(todo), output, retried)


def predict_folder(
    model: str | Path | OpenVINOModel,
    folder: str | Path,
    output: str | Path | None = None,
    masks: str | Path | None = None,
    precision: Precision = "auto",
    device: str = "CPU",
    resize: bool = True,
) -> list[Prediction]:
    """Score every image of a (small) folder and return the predictions with their maps and masks.

    The same stream as :func:`score_folder`, but every map and mask is kept in memory: for large
    folders use :func:`score_folder`. Unreadable images are logged, written to the CSV and left out.

    Args:
        model: Exported ``.xml``/``.onnx`` file or a loaded :class:`OpenVINOModel`.
        folder: Folder of images (searched recursively) or one image.
        output: CSV to write (replaced if it exists; see :class:`PredictionWriter`), or ``None``.
        masks: Folder to write the predicted masks to (PNG, image size, same relative paths), or ``None``.
        precision: See :class:`OpenVINOModel`.
        device: OpenVINO device.
        resize: Resize images like training before the graph (see :class:`OpenVINOModel`).

    Returns:
        One :class:`Prediction` per readable image, in file order.

    """
    inferencer = throughput_model(model, precision, device, resize)
    root = Path(folder) if Path(folder).is_dir() else Path(folder).parent
    writer = PredictionWriter(output, root, masks) if output is not None else None
    predictions = []
    try:
        for result in stream_predictions(inferencer, list_images(folder), keep_maps=True):
            if writer is not None:
                writer.write(result)
            elif masks is not None and isinstance(result, Prediction):
                save_mask(result, root, Path(masks))
            if isinstance(result, Prediction):
                predictions.append(result)
    finally:
        if writer is not None:
            writer.close()
    return predictions
