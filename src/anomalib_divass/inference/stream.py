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
    infer requests (as many as the compiled model finds optimal; compile it with :func:`throughput_model`
    for several streams). At most ``2 x requests + workers`` images are held at any time, whatever the
    number of files, and results are yielded in the order of ``images`` as soon as they and all earlier
    ones are done. An image that cannot be read is yielded as a :class:`Failure` and the stream goes on;
    any other error (e.g. a fixed-size model refusing an image size) stops it.

    OpenVINO's threads never run Python: requests are started and awaited from this thread, oldest
    first (no completion callbacks), so no OpenVINO lock is ever held while waiting for the GIL.

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
    from anomalib_divass.data import ImageReadError, read_image  # noqa: PLC0415

    workers = workers or min(os.cpu_count() or 1, 8)
    requests = _InOrderRequests(model.model, keep_maps, keep_masks)
    prefetch = requests.size + workers

    def load(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        image = read_image(path, as_tensor=False)
        return model.prepare(image, name=path), (int(image.shape[0]), int(image.shape[1]))

    reading: deque[tuple[Path, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="divass-reader") as readers:
        try:
            for path in images:
                reading.append((path, readers.submit(load, path)))
                if len(reading) >= prefetch:
                    yield from _start_next(requests, reading, ImageReadError)
            while reading:
                yield from _start_next(requests, reading, ImageReadError)
            yield from requests.drain()
        finally:  # also on an interruption or an error: no reader or request outlives the stream
            for _, future in reading:
                future.cancel()
            requests.cancel()


def _start_next(
    requests: _InOrderRequests, reading: deque[tuple[Path, Future]], read_error: type[Exception]
) -> Iterator[Prediction | Failure]:
    """Hand the oldest read image to a free request (or queue its failure); yield the results now ready."""
    path, future = reading.popleft()
    try:
        array, size = future.result()
    except read_error as error:
        logger.warning("Skipped %s", error)
        requests.fail(Failure(path, str(error)))
    else:
        yield from requests.start(array, path, size)
    yield from requests.ready()


class _InOrderRequests:
    """OpenVINO infer requests run asynchronously and collected in the order they were started.

    Args:
        compiled: The compiled model.
        keep_maps: See :func:`stream_predictions`.
        keep_masks: See :func:`stream_predictions`.

    """

    def __init__(self, compiled: Any, keep_maps: bool, keep_masks: bool) -> None:  # noqa: ANN401
        count = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.free = deque(compiled.create_infer_request() for _ in range(count))
        self.size = count
        self.queue: deque[tuple[Any, Path, tuple[int, int]] | Failure] = deque()
        self.names = [next(iter(output.get_names())) for output in compiled.outputs]  # as anomalib's post_process
        self.keep_maps, self.keep_masks = keep_maps, keep_masks

    def start(self, array: np.ndarray, path: Path, size: tuple[int, int]) -> Iterator[Prediction | Failure]:
        """Start one image on a free request, first finishing the oldest ones while none is free."""
        while not self.free:
            yield self._finish_oldest()
        request = self.free.popleft()
        request.start_async(array)  # copies the input; OpenVINO runs it on its own threads
        self.queue.append((request, path, size))

    def fail(self, failure: Failure) -> None:
        """Queue an unreadable image's failure, to be yielded in its place."""
        self.queue.append(failure)

    def ready(self) -> Iterator[Prediction | Failure]:
        """The oldest results that are already done (never waits)."""
        while self.queue and (isinstance(self.queue[0], Failure) or self.queue[0][0].wait_for(0)):
            yield self._finish_oldest()

    def drain(self) -> Iterator[Prediction | Failure]:
        """Every remaining result, waiting for each."""
        while self.queue:
            yield self._finish_oldest()

    def cancel(self) -> None:
        """Let the requests still running finish (their results are dropped)."""
        for item in self.queue:
            if not isinstance(item, Failure):
                item[0].wait()
        self.queue.clear()

    def _finish_oldest(self) -> Prediction | Failure:
        item = self.queue.popleft()
        if isinstance(item, Failure):
            return item
        request, path, size = item
        try:
            request.wait()  # releases the GIL; raises if the inference failed
            # The request's output buffers are reused by the next image: keep copies only.
            outputs = {name: request.get_output_tensor(i).data for i, name in enumerate(self.names)}
            return _prediction(outputs, path, size, self.keep_maps, self.keep_masks)
        finally:
            self.free.append(request)


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
