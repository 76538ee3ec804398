"""Detection quality of DivideAssemble deployed with OpenVINO: FP32, bf16, INT8_PTQ and INT8_ACQ.

Exports a trained checkpoint with anomalib's own ``to_openvino`` and prints image and pixel AUROC of
every variant on the category's test set, side by side with PyTorch:

* FP32 IR; anomalib's ``INT8_PTQ`` (NNCF's defaults on the whole graph); the plugin's ``INT8_PTQ``
  (``anomalib_divass.models.divide_assemble.export.DeploymentMixin``: only the convolutions in int8);
  anomalib's ``INT8_ACQ`` (NNCF accuracy control);
* every IR runs twice, with OpenVINO's f32 and bf16 inference precision (bf16 is OpenVINO's default on
  CPUs with bf16 instructions; for an INT8 IR it is the precision of the layers left unquantized);
* the test images are resized with the model's own pre-processing transform (antialiased, what training
  and ``anomalib test`` use) before they enter the graphs; one extra row feeds the original images, so
  that the graph's own resize runs (anomalib exports it without antialiasing);
* INT8 is calibrated on the category's **training images** only (anomalib's CLI would calibrate on
  ``datamodule.val_dataloader()``, which for MVTec AD is the test set); INT8_ACQ's accuracy control
  validates on synthetic Perlin anomalies made from training images: no test image is used before the
  evaluation;
* ``--keep`` adds INT8 rows with layer groups left in floating point (NNCF ``ignored_scope``);
  ``--sensitivity`` quantizes only / all but one group at a time (convolutions, memory addressing and
  read, scoring after the reconstruction, the rest) to find the layers INT8 hurts.

ms/image is single-image latency with dynamic shapes on whatever else runs: see
``benchmarks/openvino_speed.py`` for speed.

Usage:
    python benchmarks/precision.py --ckpt results/DivideAssemble/MVTecAD/bottle/latest/weights/lightning/model.ckpt \
        --root ../shared/datasets/mvtec_ad --category bottle [--threads 2] [--sensitivity] [--skip-acq]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

MAX_DROP_POINTS = 0.5  # the goal: INT8 within 0.5 AUROC points of FP32
GROUPS = ("convolutions", "memory", "scoring", "other")
KEEP_CHOICES = {  # --keep NAME: groups left unquantized (NNCF ignored_scope)
    "memory": ("memory",),
    "scoring": ("scoring",),
    "memory+scoring": ("memory", "scoring"),
    "all-but-convolutions": ("memory", "scoring", "other"),
}


# --------------------------------------------------------------------------- data


@dataclass
class Split:
    """Images of one split, kept as uint8 to bound memory, with labels and 256 x 256 masks.

    Attributes:
        paths: Image files.
        images: ``(H, W, 3)`` uint8 images at their original size.
        labels: 1 for anomalous.
        masks: Ground-truth masks resized like anomalib resizes them (the model's pre-processor).
    """

    paths: list[Path]
    images: list[np.ndarray]
    labels: np.ndarray
    masks: list[np.ndarray] = field(default_factory=list)


def to_input(image: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, 3)`` -> float32 ``(1, 3, H, W)`` in ``[0, 1]``, what anomalib's inferencer feeds."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def load_split(samples: Any, transform: Callable, with_masks: bool) -> Split:  # noqa: ANN401
    """Read the images (and masks) of an anomalib samples table.

    Args:
        samples: ``dataset.samples`` (``image_path``, ``label_index``, ``mask_path``).
        transform: The model's pre-processing transform (applied to masks only).
        with_masks: Read ground-truth masks.

    Returns:
        The split.
    """
    from torchvision import tv_tensors

    from anomalib_divass.data import read_image

    paths, images, labels, masks = [], [], [], []
    for row in samples.itertuples():
        image = read_image(row.image_path, as_tensor=False)
        paths.append(Path(row.image_path))
        images.append(np.round(image * 255).astype(np.uint8))
        labels.append(int(row.label_index))
        if with_masks:
            height, width = image.shape[:2]
            mask = torch.zeros(1, height, width)
            if isinstance(row.mask_path, str) and row.mask_path:
                mask = (read_image(row.mask_path, as_tensor=True)[:1] > 0.5).float()
            resized = transform(tv_tensors.Mask(mask))
            masks.append(resized[0].numpy() > 0.5)
    return Split(paths, images, np.asarray(labels), masks)


def resized(images: Iterable[np.ndarray], transform: Callable) -> list[np.ndarray]:
    """Apply the model's own resize in torch: the same pixels the exported graph computes inside."""
    return [transform(torch.from_numpy(to_input(image))).numpy() for image in images]


class ExportData:
    """What anomalib's ``to_openvino`` reads from a datamodule for INT8, built from training images.

    ``INT8_PTQ`` calibrates on ``val_dataloader()`` (here: the training images); ``INT8_ACQ`` also
    validates on ``test_dataloader()`` (here: synthetic anomalies made from training images).

    Args:
        calibration: Pre-processed training images ``(1, 3, h, w)``.
        validation: ACQ validation samples (``image``, ``gt_label``, ``gt_mask``), or ``None``.
    """

    def __init__(self, calibration: Sequence[np.ndarray], validation: Sequence[dict] | None = None) -> None:
        from anomalib import TaskType

        self.task = TaskType.SEGMENTATION
        self.train_batch_size = 1
        self.eval_batch_size = 1
        self.calibration = [{"image": torch.from_numpy(image[0])} for image in calibration]
        self.validation = list(validation or [])

    def setup(self, stage: str | None = None) -> None:
        """Nothing to set up: the images are in memory."""
        del stage

    def val_dataloader(self) -> DataLoader:
        """Calibration batches ``{"image": (1, 3, h, w)}``."""
        return DataLoader(self.calibration, batch_size=1)

    def test_dataloader(self) -> DataLoader:
        """ACQ validation batches ``{"image", "gt_label", "gt_mask"}``."""
        return DataLoader(self.validation, batch_size=1)


def synthetic_validation(images: Sequence[np.ndarray], seed: int) -> list[dict]:
    """Half the images unchanged, half with a Perlin-noise anomaly (anomalib's generator), with masks.

    Args:
        images: Pre-processed training images ``(1, 3, h, w)``.
        seed: Random seed.

    Returns:
        Samples with ``image`` ``(3, h, w)``, ``gt_label`` and ``gt_mask`` ``(h, w)``.
    """
    from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator

    torch.manual_seed(seed)
    generator = PerlinAnomalyGenerator(probability=1.0)
    samples = []
    for index, image in enumerate(images):
        tensor = torch.from_numpy(image[0])
        if index % 2:
            augmented, mask = generator(tensor)
            samples.append({"image": augmented.float(), "gt_label": 1, "gt_mask": (mask[0] > 0.5).int()})
        else:
            samples.append({"image": tensor, "gt_label": 0, "gt_mask": torch.zeros(tensor.shape[-2:], dtype=torch.int)})
    return samples


class QualityMetric:
    """Mean of image and pixel AUROC over one validation pass, for anomalib's INT8_ACQ ``val_fn``.

    ``DivideAssemble.to_openvino`` wraps it in ``anomalib_divass.models.divide_assemble.export.ResettingMetric``,
    which resets it after every pass NNCF makes (anomalib's ``val_fn`` never does).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the collected predictions."""
        self.scores: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.maps: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []

    def update(self, batch: Any) -> None:  # noqa: ANN401
        """Collect one ``ImageBatch`` of predictions and ground truth."""
        self.scores.append(batch.pred_score.reshape(-1).float())
        self.labels.append(batch.gt_label.reshape(-1).int())
        self.maps.append(batch.anomaly_map.reshape(-1).float())
        self.masks.append(batch.gt_mask.reshape(-1).int())

    def compute(self) -> float:
        """Mean of image and pixel AUROC of the collected predictions."""
        image = auroc(torch.cat(self.scores), torch.cat(self.labels))
        pixel = auroc(torch.cat(self.maps), torch.cat(self.masks))
        return (image + pixel) / 2


def auroc(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Binary AUROC (torchmetrics, exact)."""
    from torchmetrics.functional.classification import binary_auroc

    return float(binary_auroc(torch.as_tensor(scores).float(), torch.as_tensor(labels).int()))


# --------------------------------------------------------------------------- variants


@dataclass
class Row:
    """One line of the quality table."""

    variant: str
    runtime: str
    image_auroc: float
    pixel_auroc: float
    ms_per_image: float
    scores: np.ndarray
    note: str = ""


Predict = Callable[[np.ndarray], dict[str, np.ndarray]]


def evaluate(predict: Predict, inputs: Sequence[np.ndarray], test: Split) -> tuple[float, float, float, np.ndarray]:
    """Image and pixel AUROC of the normalised outputs, median ms per image, and the scores.

    Args:
        predict: ``(1, 3, H, W)`` float32 -> outputs with ``pred_score`` and ``anomaly_map``.
        inputs: One ``(1, 3, H, W)`` float32 input per test image.
        test: The test split (labels and masks).

    Returns:
        ``(image AUROC, pixel AUROC, median ms per image, normalised scores)``.
    """
    scores, maps, times = [], [], []
    for image in inputs:
        start = time.perf_counter()
        outputs = predict(image)
        times.append(time.perf_counter() - start)
        scores.append(float(np.asarray(outputs["pred_score"]).reshape(-1)[0]))
        maps.append(np.asarray(outputs["anomaly_map"]).reshape(test.masks[0].shape))
    pixel = auroc(np.stack(maps).reshape(-1), np.stack(test.masks).reshape(-1))
    return auroc(np.asarray(scores), test.labels), pixel, 1e3 * statistics.median(times), np.asarray(scores)


def openvino_predictor(path: Path, precision: str, threads: int | None) -> tuple[Predict, str]:
    """Compile an IR with an inference precision; returns the predictor and the precision in effect."""
    import openvino as ov

    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    names = [output.get_any_name() for output in compiled.outputs]

    def predict(image: np.ndarray) -> dict[str, np.ndarray]:
        results = request.infer([image])
        return {name: results[index] for index, name in enumerate(names)}

    return predict, compiled.get_property("INFERENCE_PRECISION_HINT").to_string()


def quantize_with_nncf(
    fp32_xml: Path, calibration: Sequence[np.ndarray], ignored: Sequence[str], destination: Path
) -> Path:
    """``nncf.quantize`` as anomalib's INT8_PTQ calls it, plus an ``ignored_scope`` (anomalib passes none).

    Args:
        fp32_xml: The FP32 IR.
        calibration: Pre-processed training images.
        ignored: Operation names kept in higher precision.
        destination: Where to save the INT8 IR.

    Returns:
        The saved ``.xml``.
    """
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32_xml))
    scope = nncf.IgnoredScope(names=list(ignored), validate=True) if ignored else None
    with quiet():
        quantized = nncf.quantize(
            model, nncf.Dataset(list(calibration)), subset_size=len(calibration), ignored_scope=scope
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(destination), compress_to_fp16=False)
    return destination


def describe(counts: dict[str, int]) -> str:
    """``"14 Convolution, 10 Divide, ..."`` (the first five types)."""
    total = sum(counts.values())
    if not total:
        return "no quantized activations"
    parts = ", ".join(f"{count} {kind}" for kind, count in list(counts.items())[:5])
    return f"{total} quantized activation inputs: {parts}{', ...' if len(counts) > 5 else ''}"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence exporters' and NNCF's progress output."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, type=Path, help="DivideAssemble Lightning checkpoint")
    parser.add_argument("--root", required=True, type=Path, help="dataset root holding the category folder")
    parser.add_argument("--category", required=True)
    parser.add_argument("--work", type=Path, default=None, help="folder for the exported models (default: temp)")
    parser.add_argument("--calibration", type=int, default=300, help="training images used for calibration")
    parser.add_argument("--acq-images", type=int, default=40, help="training images made into ACQ validation")
    parser.add_argument("--max-drop", type=float, default=0.005, help="INT8_ACQ max drop (0.005 = 0.5 points)")
    parser.add_argument("--threads", type=int, default=None, help="torch and OpenVINO threads (default: all)")
    parser.add_argument("--sensitivity", action="store_true", help="quantize / keep one layer group at a time")
    parser.add_argument(
        "--keep", nargs="*", default=[], choices=sorted(KEEP_CHOICES), help="extra INT8 rows with groups kept"
    )
    parser.add_argument("--skip-acq", action="store_true", help="leave INT8_ACQ out (it takes longest)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:  # noqa: PLR0915
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    import openvino as ov
    from anomalib.deploy import CompressionType

    from anomalib_divass import DivideAssemble, MVTec

    temporary = None if args.work else tempfile.TemporaryDirectory(prefix="divass_precision_")
    work = args.work or Path(temporary.name)
    began = time.perf_counter()
    model = DivideAssemble.load_from_checkpoint(args.ckpt).eval()
    transform = model.pre_processor.transform  # what training and `anomalib test` apply (antialiased resize)
    datamodule = MVTec(root=args.root, category=args.category, num_workers=0)
    datamodule.setup()
    test = load_split(datamodule.test_data.samples, transform, with_masks=True)
    train = load_split(datamodule.train_data.samples, transform, with_masks=False)
    calibration = resized(train.images[: args.calibration], transform)
    acq_source = resized(train.images[-args.acq_images :], transform)
    inputs = resized(test.images, transform)
    originals = [to_input(image) for image in test.images]
    sizes = sorted({image.shape[:2] for image in test.images})
    print(f"# DivideAssemble deployment quality: {args.root / args.category}")
    print(
        f"checkpoint {args.ckpt}; test {len(test.images)} images ({int(test.labels.sum())} anomalous, sizes "
        f"{sizes[0]}..{sizes[-1]}); INT8 calibration: {len(calibration)} training images; INT8_ACQ validation: "
        f"{len(acq_source)} training images, half with synthetic Perlin anomalies, max drop {args.max_drop} of "
        f"(image AUROC + pixel AUROC) / 2; threads {args.threads or 'all'}; torch {torch.__version__}, "
        f"OpenVINO {ov.get_version().split('-')[0]}"
    )

    from anomalib.models.components.base.export_mixin import ExportMixin

    from anomalib_divass.models.divide_assemble.export import layer_groups, quantized_inputs

    irs: dict[str, tuple[Path, str]] = {}
    with quiet():
        irs["FP32 IR"] = (model.to_openvino(work / "fp32"), "anomalib to_openvino")
        start = time.perf_counter()
        path = ExportMixin.to_openvino(  # anomalib's own INT8_PTQ (NNCF defaults), bypassing the plugin's
            model, work / "int8_ptq", compression_type=CompressionType.INT8_PTQ, datamodule=ExportData(calibration)
        )
    irs["INT8_PTQ (anomalib)"] = (path, f"NNCF defaults on the whole graph, {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    with quiet():
        path = model.to_openvino(  # DivideAssemble's INT8_PTQ (DeploymentMixin)
            work / "int8_plugin", compression_type=CompressionType.INT8_PTQ, datamodule=datamodule
        )
    how = f"DeploymentMixin: convolutions only, MIXED, full bias correction, {time.perf_counter() - start:.0f} s"
    irs["INT8_PTQ (plugin)"] = (path, how)
    if not args.skip_acq:
        acq_data = ExportData(calibration, synthetic_validation(acq_source, seed=0))
        start = time.perf_counter()
        with quiet():
            path = model.to_openvino(  # anomalib's INT8_ACQ; the mixin only wraps the metric
                work / "int8_acq",
                compression_type=CompressionType.INT8_ACQ,
                datamodule=acq_data,
                metric=QualityMetric(),
                max_drop=args.max_drop,
            )
        irs["INT8_ACQ (anomalib)"] = (path, f"NNCF accuracy control, {time.perf_counter() - start:.0f} s")
    groups = layer_groups(ov.Core().read_model(str(irs["FP32 IR"][0])))
    for keep in args.keep:
        kept = [name for group in KEEP_CHOICES[keep] for name in groups[group]]
        path = quantize_with_nncf(irs["FP32 IR"][0], calibration, kept, work / f"int8_keep_{keep}" / "model.xml")
        irs[f"INT8_PTQ, {keep} kept"] = (path, f"NNCF defaults, ignored_scope {len(kept)} ops")

    def torch_predict(image: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            raw = model.model(torch.from_numpy(image))  # already resized like in training
            batch = model.post_processor(raw)
        return {"pred_score": batch.pred_score.numpy(), "anomaly_map": batch.anomaly_map.numpy()}

    rows: list[Row] = [Row("PyTorch (as `anomalib test`)", "f32", *evaluate(torch_predict, inputs, test))]
    predict, effective = openvino_predictor(irs["FP32 IR"][0], "f32", args.threads)
    note = "original image into the graph: its resize has no antialiasing (anomalib's export transform)"
    rows.append(Row("FP32 IR, unresized input", effective, *evaluate(predict, originals, test), note=note))
    for name, (path, how) in irs.items():
        note = f"{how}; {describe(quantized_inputs(ov.Core().read_model(str(path))))}"
        for precision in ("f32", "bf16"):
            predict, effective = openvino_predictor(path, precision, args.threads)
            rows.append(Row(name, effective, *evaluate(predict, inputs, test), note=note))
    print_table(rows, baseline=rows[0])

    if args.sensitivity:
        print("\n## INT8 sensitivity (NNCF ignored_scope; OpenVINO f32 for the unquantized rest)\n")
        sizes_text = ", ".join(f"{group} {len(names)} ops" for group, names in groups.items())
        print(f"Groups: {sizes_text}.")
        sensitivity = []
        for group in GROUPS:
            for mode in ("only", "all but"):
                kept = groups[group] if mode == "all but" else [n for g in GROUPS if g != group for n in groups[g]]
                folder = work / f"{mode.replace(' ', '_')}_{group}"
                path = quantize_with_nncf(irs["FP32 IR"][0], calibration, kept, folder / "model.xml")
                predict, effective = openvino_predictor(path, "f32", args.threads)
                label = f"INT8: {mode} {group}"
                note = describe(quantized_inputs(ov.Core().read_model(str(path))))
                sensitivity.append(Row(label, effective, *evaluate(predict, inputs, test), note=note))
        print_table(sensitivity, baseline=rows[0])
    kept = "removed" if temporary else f"in {work}"
    print(f"\n(total {time.perf_counter() - began:.0f} s; exported models {kept})")
    if temporary:
        temporary.cleanup()


def print_table(rows: Sequence[Row], baseline: Row) -> None:
    print()
    print("| variant | runtime | image AUROC | Δ pts | pixel AUROC | Δ pts | max Δ score | ms/image | how |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        image_drop = 100 * (row.image_auroc - baseline.image_auroc)
        pixel_drop = 100 * (row.pixel_auroc - baseline.pixel_auroc)
        flag = " ⚠" if min(image_drop, pixel_drop) < -MAX_DROP_POINTS else ""
        score_diff = float(np.abs(row.scores - baseline.scores).max())
        print(
            f"| {row.variant} | {row.runtime} | {row.image_auroc:.4f} | {image_drop:+.2f} | {row.pixel_auroc:.4f} | "
            f"{pixel_drop:+.2f}{flag} | {score_diff:.1e} | {row.ms_per_image:.1f} | {row.note} |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
