"""The pictures of a test or predict run: anomalib's panels with the reconstruction in them, and a list of them.

A reconstruction model can show what the part should have looked like. :class:`ReconstructionVisualizer`
is anomalib's ``ImageVisualizer`` (same fields, overlays, sizes and file names; written by process 0 only,
see :class:`~.distributed.RankZeroImageVisualizer`) with one more tile in every panel: the network's
reconstruction, right after the image. ``DivideAssemble``'s test and predict steps keep the reconstruction
that the scoring forward computed anyway (:func:`score_with_reconstruction`, a forward hook on the
autoencoder: no second forward, the exported ``forward`` unchanged) and hand it to the visualizer on the batch
(:func:`attach_reconstruction`); ``--model.visualize_reconstruction false`` leaves it out, and the panels are
anomalib's.

Next to the panels the visualizer writes ``predictions.csv`` (one row per picture: image, panel, score,
predicted and true label, defect type) and ``run.json`` (model, data, threshold, test metrics), from which
``anomalib-divass report`` makes a browsable page.

Example:
    >>> import torch
    >>> from anomalib.data import ImageBatch
    >>> batch = ImageBatch(image=torch.rand(2, 3, 32, 32))
    >>> attach_reconstruction(batch, torch.rand(2, 3, 32, 32))
    >>> reconstruction_of(batch).shape
    torch.Size([2, 3, 32, 32])

"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import torch
from anomalib.utils.path import generate_output_filename
from anomalib.visualization import ImageVisualizer
from anomalib.visualization.image.functional import add_text_to_image, create_image_grid, visualize_image
from anomalib.visualization.image.item_visualizer import visualize_image_item

from .distributed import RankZeroImageVisualizer

if TYPE_CHECKING:
    from anomalib.data import ImageBatch, ImageItem
    from lightning.pytorch import LightningModule, Trainer
    from torch import nn

__all__ = [
    "PREDICTIONS_FIELDS",
    "PREDICTIONS_FILE",
    "RECONSTRUCTION_TITLE",
    "RUN_FILE",
    "ReconstructionPanels",
    "ReconstructionVisualizer",
    "attach_reconstruction",
    "reconstruction_of",
    "score_with_reconstruction",
]

logger = logging.getLogger(__name__)

RECONSTRUCTION_TITLE = "Reconstruction"
PREDICTIONS_FILE = "predictions.csv"  # in the visualizer's output folder (``<results>/images``)
RUN_FILE = "run.json"
# ``panel``: the picture, relative to the CSV's folder; labels 1/0, ``gt_label`` empty where unknown;
# ``gt_mask`` 1 where the ground-truth mask is known; ``reconstruction`` 1 where the panel shows it.
PREDICTIONS_FIELDS = (
    "image_path",
    "panel",
    "pred_score",
    "pred_label",
    "gt_label",
    "defect_type",
    "gt_mask",
    "reconstruction",
)
Picture = Any  # a PIL image, as anomalib's drawing functions return (the model folder does not import PIL)
_ATTRIBUTE = "reconstruction"  # not a field of anomalib's ImageBatch: a plain attribute, kept when pickled


def attach_reconstruction(batch: ImageBatch, reconstruction: torch.Tensor) -> None:
    """Hand the visualizer the reconstructions of a batch: ``(B, C, H, W)`` in ``[0, 1]``, one per image.

    anomalib's batch dataclass has no field for it, so it travels as an attribute of the batch (kept when the
    batch is gathered to process 0; ignored by everything of anomalib's).
    """
    setattr(batch, _ATTRIBUTE, reconstruction.detach())


def reconstruction_of(batch: ImageBatch) -> torch.Tensor | None:
    """The reconstructions :func:`attach_reconstruction` gave the batch, or ``None``."""
    value = getattr(batch, _ATTRIBUTE, None)
    return value if isinstance(value, torch.Tensor) else None


def score_with_reconstruction(model: nn.Module, batch: ImageBatch, keep: bool = True) -> ImageBatch:
    """Score a batch with the eval-mode forward (as anomalib's test and predict steps do), keeping the reconstruction.

    The forward computes the reconstruction to compare it with the image; a forward hook on the autoencoder
    keeps a reference to it, so it costs no second forward and no extra computation, and the forward itself
    (the one that is exported) is unchanged.

    Args:
        model: The ``DivideAssembleModel`` (its ``autoencoder`` returns ``(image, entropy)``).
        batch: The batch; updated in place with the predictions.
        keep: Keep the reconstruction (``False``: exactly anomalib's step).

    Returns:
        The batch with ``pred_score`` and ``anomaly_map`` (and the reconstruction attached when ``keep``).

    """
    kept: list[torch.Tensor] = []
    handle = (
        model.autoencoder.register_forward_hook(lambda _module, _inputs, output: kept.append(output.image))
        if keep
        else None
    )
    try:
        predictions = model(batch.image)
    finally:
        if handle is not None:
            handle.remove()
    batch.update(**predictions._asdict())
    if kept:
        attach_reconstruction(batch, kept[-1])
    return batch


class ReconstructionPanels(ImageVisualizer):
    """anomalib's ``ImageVisualizer`` with the reconstruction in every panel, and the list of its pictures.

    The panel is anomalib's (by default image, ground-truth mask, anomaly-map overlay, predicted-mask overlay;
    fields and overlays as configured) with a ``Reconstruction`` tile inserted after the image, for batches
    that carry one (see :func:`attach_reconstruction`); other batches get anomalib's panel unchanged. Files are
    named as anomalib names them. ``predictions.csv`` and ``run.json`` are written into the output folder
    (see the module docstring). :class:`ReconstructionVisualizer` is this, written by process 0 only.

    Args:
        args: ``ImageVisualizer``'s arguments.
        kwargs: ``ImageVisualizer``'s keyword arguments.

    Example:
        >>> visualizer = ReconstructionPanels()
        >>> visualizer.fields, visualizer.output_dir
        (['image', 'gt_mask'], None)

    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._given_output_dir = self.output_dir
        self._log: TextIO | None = None
        self._writer: Any = None
        self._rows = 0
        self._with_reconstruction = 0

    # --- the pictures -------------------------------------------------------------------------------------

    def panel(self, item: ImageItem, reconstruction: torch.Tensor | None = None) -> Picture | None:
        """Anomalib's panel of one item, with the reconstruction tile after the image when given.

        Args:
            item: One item of a scored batch.
            reconstruction: Its reconstruction ``(C, H, W)`` in ``[0, 1]``, or ``None``.

        Returns:
            The panel, or ``None`` when anomalib draws nothing for the item.

        """
        picture = visualize_image_item(
            item,
            fields=self.fields,
            overlay_fields=self.overlay_fields,
            field_size=self.field_size,
            fields_config=self.fields_config,
            overlay_fields_config=self.overlay_fields_config,
            text_config=self.text_config,
        )
        if picture is None or reconstruction is None:
            return picture
        width, height = self.field_size
        tiles = [picture.crop((left, 0, left + width, height)) for left in range(0, picture.width, width)]
        tiles.insert(self._reconstruction_position(item), self._reconstruction_tile(reconstruction))
        return create_image_grid(tiles, nrow=len(tiles))

    def _reconstruction_tile(self, reconstruction: torch.Tensor) -> Picture:
        """The reconstruction at the panel's tile size, titled like anomalib's tiles."""
        tile = visualize_image(reconstruction.detach().float().clamp(0, 1).cpu()).convert("RGB")
        tile = tile.resize(self.field_size)
        text = dict(self.text_config)
        if text.pop("enable", True):
            tile = add_text_to_image(tile, RECONSTRUCTION_TITLE, **text)
        return tile

    def _reconstruction_position(self, item: ImageItem) -> int:
        """Index of the tile after the image among the tiles anomalib drew (fields it could not draw are left out)."""
        if "image" not in self.fields:
            return 0
        before = self.fields[: self.fields.index("image")]
        return 1 + sum(getattr(item, field, None) is not None for field in before)

    # --- the callback hooks -------------------------------------------------------------------------------

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start a fresh ``predictions.csv`` (process 0)."""
        del pl_module
        self._start(trainer)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start a fresh ``predictions.csv`` (process 0)."""
        del pl_module
        self._start(trainer)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Close ``predictions.csv`` and write ``run.json`` with the test metrics (process 0)."""
        self._finish(trainer, pl_module, "test")

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Close ``predictions.csv`` and write ``run.json`` (process 0)."""
        self._finish(trainer, pl_module, "predict")

    def _draw_batch(self, trainer: Trainer, batch: ImageBatch) -> None:
        """Draw, save and list the panels of one batch (called on process 0 for every process's batch)."""
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / "images"
        reconstructions = reconstruction_of(batch)
        datamodule = getattr(trainer, "datamodule", None)
        dataset_name = getattr(datamodule, "name", None) if datamodule else None
        category = getattr(datamodule, "category", None) if datamodule else None
        for index, item in enumerate(batch):
            reconstruction = None if reconstructions is None else reconstructions[index]
            picture = self.panel(item, reconstruction)
            if picture is None:
                continue
            filename = generate_output_filename(
                input_path=item.image_path or "",
                output_path=self.output_dir,
                dataset_name=dataset_name,
                category=category,
            )
            picture.save(filename)
            self._list(item, Path(filename), reconstruction is not None)
        if self._log is not None:
            self._log.flush()

    def _start(self, trainer: Trainer) -> None:
        self._close()
        self._rows = self._with_reconstruction = 0
        if self._given_output_dir is None:  # each run writes into its own results folder (anomalib kept the first)
            self.output_dir = Path(trainer.default_root_dir) / "images"
        if not trainer.is_global_zero:
            return
        folder = Path(self.output_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._log = (folder / PREDICTIONS_FILE).open("w", newline="", encoding="utf-8")
        except OSError as error:  # the pictures are still written; only the list is missing
            logger.warning("Cannot write %s (%s): `anomalib-divass report` will not find this run.", folder, error)
            return
        self._writer = csv.writer(self._log)
        self._writer.writerow(PREDICTIONS_FIELDS)

    def _list(self, item: ImageItem, filename: Path, with_reconstruction: bool) -> None:
        """Append one picture's row to ``predictions.csv``."""
        if self._writer is None:
            return
        image_path = str(item.image_path or "")
        try:
            panel = filename.resolve().relative_to(Path(self.output_dir).resolve()).as_posix()
        except ValueError:
            panel = str(filename)
        self._writer.writerow(
            [
                image_path,
                panel,
                _number(item.pred_score),
                _flag(item.pred_label),
                _flag(item.gt_label),
                Path(image_path).parent.name if image_path else "",
                int(item.gt_mask is not None),
                int(with_reconstruction),
            ]
        )
        self._rows += 1
        self._with_reconstruction += with_reconstruction

    def _finish(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._close()
        if not trainer.is_global_zero or self.output_dir is None or not self._rows:
            return
        datamodule = getattr(trainer, "datamodule", None)
        post_processor = getattr(pl_module, "post_processor", None)
        hparams = getattr(pl_module, "hparams", {})
        metrics = {}
        if stage == "test":
            metrics = {
                name: float(value)
                for name, value in trainer.callback_metrics.items()
                if name.startswith(("image_", "pixel_")) and torch.as_tensor(value).numel() == 1
            }
        run = {
            "model": type(pl_module).__name__,
            "variant": hparams.get("variant"),
            "stage": stage,
            "dataset": getattr(datamodule, "name", None),
            "category": getattr(datamodule, "category", None),
            "data_root": str(getattr(datamodule, "root", "") or "") or None,
            "results": str(Path(trainer.default_root_dir).resolve()),
            "threshold": _threshold(post_processor),
            "metrics": metrics,
            "images": self._rows,
            "reconstructions": self._with_reconstruction,
            "field_size": list(self.field_size),
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        try:
            (Path(self.output_dir) / RUN_FILE).write_text(json.dumps(run, indent=2, default=str), encoding="utf-8")
        except OSError as error:
            logger.warning("Cannot write %s (%s).", Path(self.output_dir) / RUN_FILE, error)

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
        self._log = self._writer = None

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,  # noqa: ANN401
        batch: ImageBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Draw, save and list the batch's panels (``on_predict_batch_end`` comes here too, as in anomalib)."""
        del pl_module, outputs, batch_idx, dataloader_idx
        self._draw_batch(trainer, batch)


class ReconstructionVisualizer(RankZeroImageVisualizer, ReconstructionPanels):
    """:class:`ReconstructionPanels` written by process 0 only: DivideAssemble's visualizer.

    ``RankZeroImageVisualizer`` gathers every process's batch to process 0 and hands each to the next
    ``on_test_batch_end`` in line, :class:`ReconstructionPanels`'s, which draws it; in one process it is
    exactly :class:`ReconstructionPanels`.

    Example:
        >>> [cls.__name__ for cls in ReconstructionVisualizer.__mro__[:4]]
        ['ReconstructionVisualizer', 'RankZeroImageVisualizer', 'ReconstructionPanels', 'ImageVisualizer']

    """


def _number(value: Any) -> str:  # noqa: ANN401
    """A score as CSV text (empty when missing)."""
    if value is None:
        return ""
    return f"{float(torch.as_tensor(value).float().reshape(-1)[0]):.6f}"


def _flag(value: Any) -> str:  # noqa: ANN401
    """A label as ``1``/``0`` (empty when unknown)."""
    if value is None:
        return ""
    return str(int(bool(torch.as_tensor(value).reshape(-1)[0])))


def _threshold(post_processor: Any) -> dict[str, Any] | None:  # noqa: ANN401
    """The image threshold the predicted labels used: on the score scale of the CSV, and the raw one."""
    if post_processor is None or not getattr(post_processor, "enable_thresholding", False):
        return None
    try:
        raw = float(post_processor.image_threshold)
        normalized = bool(getattr(post_processor, "enable_normalization", False))
        score = float(post_processor.normalized_image_threshold) if normalized else raw
    except (AttributeError, TypeError, RuntimeError):
        return None
    return {"score": score, "raw": raw, "normalized": normalized}
