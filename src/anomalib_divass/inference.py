"""Inference with an exported DivideAssemble: an OpenVINO inferencer that resizes like training, and folder scoring.

* :class:`OpenVINOModel` is anomalib's ``OpenVINOInferencer`` that resizes images like training
  (anomalib exports its resize without antialiasing), with an explicit precision, an optional compile
  cache (anomalib's always writes ``./openvino_cache``) and a clear error for a wrong fixed input size.
* :func:`score_folder` and :func:`main` (``python -m anomalib_divass.inference``, also
  ``anomalib-divass predict-folder``) score a folder of any size as a stream: reader threads decode
  images while OpenVINO runs in throughput mode (``AsyncInferQueue``), memory stays flat, every result
  is appended to a CSV and flushed at once, an unreadable file is reported and skipped, and
  ``--resume`` continues an interrupted run. :func:`stream_predictions` is the stream itself;
  :func:`predict_folder` returns the predictions (with maps) of a small folder.

Example:
    >>> list_images("no/such/folder")
    Traceback (most recent call last):
    ...
    FileNotFoundError: No image folder at 'no/such/folder'. Pass --data with a folder of images or one image file.

"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from anomalib.data import NumpyImageBatch
from anomalib.deploy import OpenVINOInferencer
from PIL.Image import Image as PILImage

from anomalib_divass.deploy import exported_format


class InputSizeError(ValueError):
    """An image does not have the fixed size a model was exported with."""


__all__ = [
    "Failure",
    "FolderSummary",
    "InputSizeError",
    "OpenVINOModel",
    "Prediction",
    "PredictionWriter",
    "add_arguments",
    "list_images",
    "main",
    "predict_folder",
    "predict_with_exported_model",
    "run_command",
    "save_mask",
    "score_folder",
    "stream_predictions",
    "throughput_model",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
Precision = Literal["f32", "bf16", "f16", "auto"]


class OpenVINOModel(OpenVINOInferencer):
    """anomalib's ``OpenVINOInferencer`` that resizes like training, with a precision choice and a size check.

    anomalib exports the pre-processor's ``Resize`` without antialiasing (its "export transform"), while
    training, ``anomalib test`` and ``anomalib predict`` resize with antialiasing. Down-scaled images
    therefore reach the exported graph with aliasing, and its scores differ from PyTorch's (on MVTec AD
    bottle, 512 -> 256, this costs 0.7 image and 0.8 pixel AUROC points). By default this class resizes
    every image to the model's resolution with the antialiased bilinear resize of training before the
    graph; the graph's own resize then does nothing, and OpenVINO FP32 matches PyTorch.

    Args:
        path: Exported model (``.xml``, ``.bin`` or ``.onnx``).
        device: OpenVINO device.
        precision: ``"f32"`` (matches PyTorch to ~1e-6), ``"bf16"``, ``"f16"``, or ``"auto"`` (OpenVINO's
            choice: bf16 on CPUs with bf16 instructions, f32 otherwise).
        config: Further OpenVINO properties (e.g. ``{"INFERENCE_NUM_THREADS": 2}``).
        cache_dir: Compile cache folder, or ``None`` for none (anomalib's inferencer always writes
            ``./openvino_cache``).
        resize: Resize images to the model's resolution as training did (see above). ``False`` feeds
            them as they are, like anomalib's inferencer; a fixed-size export then refuses other sizes.

    Example:
        >>> model = OpenVINOModel("results/weights/openvino/model.xml", precision="f32")  # doctest: +SKIP
        >>> model.predict("image.png").pred_score  # doctest: +SKIP

    """

    def __init__(
        self,
        path: str | Path,
        device: str = "CPU",
        precision: Precision = "auto",
        config: Mapping[str, Any] | None = None,
        cache_dir: str | Path | None = None,
        resize: bool = True,
    ) -> None:
        properties = dict(config or {})
        if precision != "auto":
            properties["INFERENCE_PRECISION_HINT"] = precision
        self.cache_dir = cache_dir
        self.path = Path(path)
        self.resize = resize
        super().__init__(path=path, device=device, config=properties)

    def load_model(self, path: str | Path | tuple[bytes, bytes]) -> tuple[Any, Any, Any]:
        """Read and compile the model; like anomalib's, with the cache only when asked for.

        Args:
            path: ``.xml``/``.bin``/``.onnx`` file, or ``(xml bytes, weights bytes)``.

        Returns:
            Input port, first output port and the compiled model.

        Raises:
            ValueError: If the file is not an OpenVINO or ONNX model.
            FileNotFoundError: If it does not exist.

        """
        import openvino as ov  # noqa: PLC0415

        core = ov.Core()
        if isinstance(path, tuple):
            model = core.read_model(model=path[0], weights=path[1])
        else:
            path = Path(path)
            if exported_format(path) not in {"OpenVINO", "ONNX"}:
                msg = f"'{path}' is not an OpenVINO (.xml/.bin) or ONNX (.onnx) model; make one with `anomalib export`."
                raise ValueError(msg)
            if not path.is_file():
                msg = f"No exported model at '{path}'. Export one first: anomalib export --export_type openvino ..."
                raise FileNotFoundError(msg)
            model = core.read_model(path.with_suffix(".xml") if path.suffix == ".bin" else path)
        if self.cache_dir is not None:
            core.set_property({"CACHE_DIR": str(self.cache_dir)})
        compiled = core.compile_model(model=model, device_name=self.device, config=self.config)
        return compiled.input(0), compiled.output(0), compiled

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The fixed ``(height, width)`` of a model exported with ``--input_size``, else ``None``."""
        return _static_size(self.input_blob.get_partial_shape())

    @property
    def model_size(self) -> tuple[int, int] | None:
        """The resolution the model works at (its anomaly map's, e.g. ``(256, 256)``), if static."""
        for output in self.model.outputs:
            if output.get_any_name() == "anomaly_map":
                return _static_size(output.get_partial_shape()) or self.input_size
        return self.input_size

    def check_size(self, size: tuple[int, int] | None, name: str | Path | None = None) -> None:
        """Raise :class:`InputSizeError` if the model has a fixed input size and ``size`` differs.

        Args:
            size: ``(height, width)`` of an image (``None``: unknown, not checked).
            name: The image file, named in the message.

        Raises:
            InputSizeError: Naming both sizes and the ways to fix it.

        """
        fixed = self.input_size
        if fixed is None or size is None or tuple(size) == fixed:
            return
        msg = (
            f"This model was exported with --input_size [{fixed[0]},{fixed[1]}] and only accepts "
            f"{fixed[0]} x {fixed[1]} images; got {size[0]} x {size[1]}"
            + (f" ('{name}')" if name is not None else "")
            + f". Resize the images to {fixed[0]} x {fixed[1]} before predicting (OpenVINOModel does it when "
            "resize=True, the folder command unless --no-resize), or export the model without --input_size."
        )
        raise InputSizeError(msg)

    def prepare(
        self, image: str | Path | np.ndarray | torch.Tensor | PILImage, name: str | Path | None = None
    ) -> np.ndarray:
        """The ``(1, 3, h, w)`` float32 input the graph gets: read, scaled to ``[0, 1]``, resized like training.

        Args:
            image: Image file, ``(H, W, 3)`` array, PIL image or ``(3, H, W)`` tensor in ``[0, 1]``.
            name: The file the image came from, for messages (default: ``image`` if it is a path).

        Returns:
            The graph input.

        Raises:
            InputSizeError: If ``resize`` is off and the image does not fit a fixed-size model.

        """
        from anomalib_divass.data import read_image  # noqa: PLC0415

        if isinstance(image, str | Path):
            name = image
            image = read_image(image, as_tensor=False)
        elif isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy()
        elif not isinstance(image, np.ndarray):  # PIL image
            image = np.asarray(image.convert("RGB")) / 255.0
        array = self.pre_process(np.asarray(image))
        target = self.input_size or self.model_size  # a fixed-size graph takes its input size
        if self.resize and target is not None and tuple(array.shape[-2:]) != target:
            from torchvision.transforms.v2.functional import resize  # noqa: PLC0415

            array = resize(torch.from_numpy(array), list(target), antialias=True).numpy()
        self.check_size(tuple(array.shape[-2:]), name)
        return array

    def predict(
        self, image: str | Path | np.ndarray | torch.Tensor | PILImage, name: str | Path | None = None
    ) -> NumpyImageBatch:
        """Score one image.

        Args:
            image: Image file, ``(H, W, 3)`` array, PIL image or ``(3, H, W)`` tensor in ``[0, 1]``.
            name: The file the image came from, for messages.

        Returns:
            ``NumpyImageBatch`` with ``pred_score``, ``pred_label``, ``anomaly_map`` and ``pred_mask``.

        """
        array = self.prepare(image, name)
        predictions = self.model({self.input_blob.any_name: array})
        return NumpyImageBatch(image=array, **self.post_process(predictions))


def _static_size(shape: Any) -> tuple[int, int] | None:  # noqa: ANN401
    """``(H, W)`` of a static 4-D OpenVINO partial shape's last two dimensions, else ``None``."""
    if shape.rank.is_dynamic or len(shape) != 4 or shape[2].is_dynamic or shape[3].is_dynamic:
        return None
    return int(shape[2].get_length()), int(shape[3].get_length())


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


@dataclass
class FolderSummary:
    """What :func:`score_folder` did.

    Attributes:
        scored: Images scored in this run.
        anomalous: Of these, images labelled anomalous.
        failed: Unreadable images skipped in this run (also in the CSV, with the error).
        resumed: Images skipped because the CSV already held them (``resume=True``).
        output: The CSV.

    """

    scored: int
    anomalous: int
    failed: list[Failure]
    resumed: int
    output: Path


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


class PredictionWriter:
    """The CSV of a folder run, one row per image appended and flushed as it comes, and the masks.

    Columns: ``image, pred_score, pred_label, anomalous_fraction, error`` (``error`` is empty for scored
    images; unreadable ones have only ``image`` and ``error``). Rows are flushed one by one, so an
    interrupted run keeps every image it scored, and a rerun with ``resume=True`` skips them.

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
        self.done = _images_in(self.path) if resume else set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.done and not (resume and self.path.is_file() and self.path.stat().st_size)
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

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> PredictionWriter:  # noqa: D105
        return self

    def __exit__(self, *exc: object) -> None:  # noqa: D105
        self.close()


CSV_FIELDS = ("image", "pred_score", "pred_label", "anomalous_fraction", "error")


def _holds_more_than_a_header(path: Path) -> bool:
    """Whether replacing ``path`` would lose anything (a run stopped before its first image loses nothing)."""
    if not path.is_file():
        return False
    with path.open(newline="", encoding="utf-8", errors="replace") as file:
        first = file.readline()
        return first.rstrip("\r\n") != ",".join(CSV_FIELDS) or bool(file.readline())


def _images_in(path: Path) -> set[str]:
    """Absolute paths of the images an existing prediction CSV holds (scored or failed).

    A last line cut off by an interruption is removed from the file, so that the rerun scores it again.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return set()
    with path.open("r+", newline="", encoding="utf-8") as file:
        text = file.read()
        if not text.endswith("\n"):  # a row torn by a kill: drop it
            file.seek(0)
            file.truncate(text.rfind("\n") + 1)
            text = text[: text.rfind("\n") + 1]
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None:
        return set()
    if tuple(header) != CSV_FIELDS:
        msg = (
            f"'{path}' is not a prediction CSV of this command (its columns are {header}, expected "
            f"{list(CSV_FIELDS)}); cannot resume from it. Pass another --output, or delete the file."
        )
        raise ValueError(msg)
    return {os.path.abspath(row[0]) for row in rows if row}


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
        resume: Keep the rows of an existing ``output`` and score only the images it does not hold.
        config: Further OpenVINO properties.
        on_result: Called with each result as it is written (e.g. to print progress).

    Returns:
        What was scored, skipped and resumed.

    Raises:
        FileExistsError: If ``output`` holds results (or another file) and ``resume`` is not set: it is never
            silently replaced. A CSV holding only the header (a run stopped before its first image) is.

    Example:
        >>> score_folder("model.xml", "images/", "predictions.csv", resume=True)  # doctest: +SKIP
        FolderSummary(scored=9000, anomalous=12, failed=[], resumed=1000, output=PosixPath('predictions.csv'))

    """
    output = Path(output)
    if not resume and _holds_more_than_a_header(output):
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
        for result in stream_predictions(inferencer, todo, workers, keep_masks=masks is not None):
            writer.write(result)
            if isinstance(result, Failure):
                failed.append(result)
            else:
                scored += 1
                anomalous += result.pred_label
            if on_result is not None:
                on_result(result)
    return FolderSummary(scored, anomalous, failed, len(images) - len(todo), output)


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


def main(argv: Sequence[str] | None = None, prog: str = "python -m anomalib_divass.inference") -> int:
    """Command line: score a folder of images with an exported model, streaming into a CSV.

    ``python -m anomalib_divass.inference --model results/weights/openvino/model.xml --data images/``

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
        prog: The command's name in its help.

    Returns:
        Exit status: 0 every image scored, 1 some unreadable images skipped, 2 nothing scored (an error).

    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Score every image of a folder with a model exported by `anomalib export` (OpenVINO or ONNX). "
        "Images are read in parallel while OpenVINO runs in throughput mode; each result is appended to the CSV "
        "as it comes, unreadable images are reported and skipped, and --resume continues an interrupted run.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(args)


def predict_with_exported_model(model: str | Path, images: str | Path, results: str | Path = "results") -> int:
    """``anomalib predict`` of an exported model: score ``images`` into a new results folder.

    Writes ``<results>/DivideAssemble/exported/v<N>/predictions.csv`` and ``masks/`` (N one more than the
    last run, like anomalib's own results folders) and prints one line per image.

    Args:
        model: Exported ``model.xml`` (or ``model.onnx``).
        images: Folder of images (searched recursively) or one image.
        results: Results root (anomalib's default ``results``).

    Returns:
        The folder command's exit status (0 all scored, 1 some unreadable images skipped, 2 an error).

    """
    root = Path(results) / "DivideAssemble" / "exported"
    versions = [int(path.name[1:]) for path in root.glob("v*") if path.name[1:].isdigit()]
    folder = root / f"v{max(versions, default=-1) + 1}"
    folder.mkdir(parents=True)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    arguments = ["--model", str(model), "--data", str(images), "--output", str(folder / "predictions.csv")]
    status = run_command(parser.parse_args([*arguments, "--masks", str(folder / "masks")]))
    print(f"Exported-model predictions (OpenVINO): {folder / 'predictions.csv'}, masks in {folder / 'masks'}")
    return status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The folder command's arguments (shared by ``python -m anomalib_divass.inference`` and ``anomalib-divass``)."""
    parser.add_argument("--model", required=True, help="exported model.xml (or model.onnx)")
    parser.add_argument("--data", required=True, help="folder of images (searched recursively) or one image")
    parser.add_argument("--output", default="predictions.csv", help="CSV to write (default: predictions.csv)")
    parser.add_argument("--masks", default=None, help="folder to write predicted masks to (PNG, image size)")
    parser.add_argument("--precision", default="auto", choices=["auto", "f32", "bf16", "f16"])
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--workers", type=int, default=None, help="image reader threads (default: CPUs, at most 8)")
    parser.add_argument("--threads", type=int, default=None, help="OpenVINO inference threads (default: all cores)")
    parser.add_argument(
        "--resume", action="store_true", help="keep the rows of an existing --output and score only the other images"
    )
    parser.add_argument("--quiet", action="store_true", help="do not print one line per image")
    parser.add_argument(
        "--no-resize",
        action="store_true",
        help="feed images as they are (the graph resizes without antialiasing; a fixed-size model refuses other sizes)",
    )


def run_command(args: argparse.Namespace) -> int:
    """Run the folder command with parsed :func:`add_arguments` arguments; see :func:`main`."""

    def show(result: Prediction | Failure) -> None:
        if isinstance(result, Failure):
            print(f"skipped: {result.error}", file=sys.stderr, flush=True)
        elif not args.quiet:
            label = "anomalous" if result.pred_label else "normal"
            print(f"{result.image!s}  {result.pred_score:.4f}  {label}", flush=True)

    try:
        summary = score_folder(
            args.model,
            args.data,
            args.output,
            args.masks,
            args.precision,
            args.device,
            resize=not args.no_resize,
            workers=args.workers,
            resume=args.resume,
            config={"INFERENCE_NUM_THREADS": args.threads} if args.threads else None,
            on_result=show,
        )
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nInterrupted. Every image scored so far is in {args.output}; rerun with --resume to go on.")
        return 130
    resumed = f" ({summary.resumed} already in the CSV were skipped)" if summary.resumed else ""
    failed = f", {len(summary.failed)} unreadable skipped" if summary.failed else ""
    print(
        f"{summary.scored} images, {summary.anomalous} anomalous{failed}{resumed}. "
        f"Scores written to {os.fspath(args.output)}"
    )
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
