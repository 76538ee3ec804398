"""Stream a folder of any size through an exported model: reader threads feed OpenVINO's throughput mode.

:func:`stream_predictions` yields one :class:`Prediction` (or :class:`Failure` for an unreadable file) per
image, in file order, while at most a few dozen images are in memory; :func:`predict_folder` keeps the
predictions (with maps) of a small folder.

Example:
    >>> list_images("no/such/folder")
    Traceback (most recent call last):
    ...
    FileNotFoundError: No image folder at 'no/such/folder'. Pass --data with a folder of images or one image file.

"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .model import IMAGE_SUFFIXES, OpenVINOModel, Precision

logger = logging.getLogger(__name__)

__all__ = ["Failure", "Prediction", "list_images", "stream_predictions", "throughput_model"]

@dataclass
class Prediction:
    """The prediction for one image file.

    Attributes:
        image: The file.
        pred_score: Normalised anomaly score in ``[0, 1]`` (0.5 is the threshold).
        pred_label: ``True`` for anomalous.
        anomalous_fraction: Fraction of the predicted mask's pixels that are anomalous.
        anomaly_map: Normalised anomaly map ``(h, w)`` at the model's resolution (``None`` when streaming
            without maps).
        pred_mask: Predicted mask ``(h, w)`` (``None`` when streaming without maps or masks).
        size: ``(height, width)`` of the image file.

    """

    image: Path
    pred_score: float
    pred_label: bool
    anomalous_fraction: float
    anomaly_map: np.ndarray | None
    pred_mask: np.ndarray | None
    size: tuple[int, int] = (0, 0)


@dataclass
class Failure:
    """An image that could not be read: reported and skipped, the run goes on.

    Attributes:
        image: The file.
        error: What went wrong, naming the file and the fix.

    """

    image: Path
    error: str



def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder (or the file itself), sorted, searched recursively.

    Args:
        folder: Folder or single image.

    Returns:
        The image files.

    Raises:
        FileNotFoundError: If nothing is there or no image is found.

    """
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        msg = f"No image folder at '{folder}'. Pass --data with a folder of images or one image file."
        raise FileNotFoundError(msg)
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        msg = f"'{folder}' holds no images ({', '.join(IMAGE_SUFFIXES)}). Pass --data with a folder of images."
        raise FileNotFoundError(msg)
    return images


def throughput_model(
    model: str | Path | OpenVINOModel,
    precision: Precision = "auto",
    device: str = "CPU",
    resize: bool = True,
    config: Mapping[str, Any] | None = None,
) -> OpenVINOModel:
    """An :class:`OpenVINOModel` compiled for throughput (several streams), or ``model`` if already loaded.

    Args:
        model: Exported ``.xml``/``.onnx`` file or a loaded :class:`OpenVINOModel` (used as it is).
        precision: See :class:`OpenVINOModel`.
        device: OpenVINO device.
        resize: See :class:`OpenVINOModel`.
        config: Further OpenVINO properties; they override ``PERFORMANCE_HINT: THROUGHPUT``.

    Returns:
        The model.

    """
    if isinstance(model, OpenVINOModel):
        return model
    properties = {"PERFORMANCE_HINT": "THROUGHPUT", **(config or {})}
    return OpenVINOModel(model, device=device, precision=precision, config=properties, resize=resize)


def stream_predictions(
    model: OpenVINOModel,
    images: Iterable[Path],
    workers: int | None = None,
    keep_maps: bool = False,
    keep_masks: bool = False,
) -> Iterator[Prediction | Failure]:
    """Score images as a stream, in order: parallel reading, OpenVINO's asynchronous requests, bounded memory.

    Reader threads decode and resize the next images while OpenVINO runs the current ones on all its
    infer requests (an ``AsyncInferQueue``; compile the model with :func:`throughput_model` for
    several streams). At most ``2 x requests + workers`` images are held at any time, whatever the number
    of files, and results are yielded in the order of ``images`` as soon as they and all earlier ones
    are done. An image that cannot be read is yielded as a :class:`Failure` and the stream goes on;
    any other error (e.g. a fixed-size model refusing an image size) stops it.

    Args:
        model: The model.
        images: Image files (any iterable; consumed lazily).
        workers: Reader threads (default: the number of CPUs, at most 8).
        keep_maps: Keep each normalised anomaly map ``(h, w)`` in its :class:`Prediction`.
        keep_masks: Keep each predicted mask ``(h, w)``.

    Yields:
        One :class:`Prediction` or :class:`Failure` per image, in input order.

    Raises:
        InputSizeError: If ``model`` has a fixed input size, does not resize and an image differs.

    """
    from openvino import AsyncInferQueue  # noqa: PLC0415

    from anomalib_divass.data import ImageReadError, read_image  # noqa: PLC0415

    workers = workers or min(os.cpu_count() or 1, 8)
    requests = AsyncInferQueue(model.model)
    prefetch = 2 * len(requests) + workers
    done: dict[int, Prediction | Failure | BaseException] = {}
    lock = threading.Lock()

    def load(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        image = read_image(path, as_tensor=False)
        return model.prepare(image, name=path), (int(image.shape[0]), int(image.shape[1]))

    names = [next(iter(output.get_names())) for output in model.model.outputs]  # as anomalib's post_process

    def finished(request: Any, userdata: tuple[int, Path, tuple[int, int]]) -> None:  # noqa: ANN401
        index, path, size = userdata
        try:  # an exception must not escape into OpenVINO's thread (it would abort the process)
            # The request's output buffers are reused by the next image: keep copies only.
            outputs = {name: request.get_output_tensor(i).data for i, name in enumerate(names)}
            result: Prediction | BaseException = _prediction(outputs, path, size, keep_maps, keep_masks)
        except BaseException as error:  # re-raised by the stream, in its own thread
            result = error
        with lock:
            done[index] = result

    requests.set_callback(finished)
    pending: deque[tuple[int, Path, Future]] = deque()
    next_out = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="divass-reader") as readers:
        try:
            for index, path in enumerate(images):
                pending.append((index, path, readers.submit(load, path)))
                if len(pending) < prefetch:
                    continue
                _start(requests, pending.popleft(), done, lock, ImageReadError)
                next_out, ready = _take_ready(done, lock, next_out)
                yield from ready
            while pending:
                _start(requests, pending.popleft(), done, lock, ImageReadError)
                next_out, ready = _take_ready(done, lock, next_out)
                yield from ready
            requests.wait_all()
            next_out, ready = _take_ready(done, lock, next_out)
            yield from ready
        finally:  # also on an interruption or an error: no reader or request outlives the stream
            for _, _, future in pending:
                future.cancel()
            requests.wait_all()


def _prediction(
    outputs: Mapping[str, np.ndarray], path: Path, size: tuple[int, int], keep_maps: bool, keep_masks: bool
) -> Prediction:
    """A :class:`Prediction` from the graph's outputs for one image (copying what it keeps)."""
    spatial = np.shape(outputs["anomaly_map"])[-2:]
    mask = np.asarray(outputs["pred_mask"]).reshape(spatial).astype(bool)
    return Prediction(
        image=path,
        pred_score=float(np.asarray(outputs["pred_score"]).reshape(-1)[0]),
        pred_label=bool(np.asarray(outputs["pred_label"]).reshape(-1)[0]),
        anomalous_fraction=float(mask.mean()),
        anomaly_map=np.array(outputs["anomaly_map"]).reshape(spatial) if keep_maps else None,
        pred_mask=mask if keep_maps or keep_masks else None,
        size=size,
    )


def _start(
    requests: Any,  # noqa: ANN401
    job: tuple[int, Path, Future],
    done: dict[int, Prediction | Failure | BaseException],
    lock: threading.Lock,
    read_error: type[Exception],
) -> None:
    """Wait for one read image and hand it to the next free infer request (or record its failure)."""
    index, path, future = job
    try:
        array, size = future.result()
    except read_error as error:
        logger.warning("Skipped %s", error)
        with lock:
            done[index] = Failure(path, str(error))
        return
    requests.start_async(array, userdata=(index, path, size))  # blocks while every request is busy


def _take_ready(
    done: dict[int, Prediction | Failure | BaseException], lock: threading.Lock, next_out: int
) -> tuple[int, list[Prediction | Failure]]:
    """The finished results that continue the output order, and the next index to wait for."""
    ready = []
    with lock:
        while next_out in done:
            result = done.pop(next_out)
            if isinstance(result, BaseException):
                raise result
            ready.append(result)
            next_out += 1
    return next_out, ready
