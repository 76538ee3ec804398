"""Inference speed on this CPU: PyTorch eager vs OpenVINO FP32, bf16 and INT8, for DivideAssemble, PaDiM, PatchCore.

Prints ONE markdown table measured in one run at ``--size`` (default 256 x 256), batch 1 and 8:
images/s and median latency (after warm-up) of the whole deployed pipeline (pre-processing, model,
post-processing: ``AnomalibModule.forward`` in PyTorch, the graph of ``to_openvino`` in OpenVINO),
GFLOP per image, achieved GFLOP/s and the fraction of the CPU's measured matrix-product peak.

* PyTorch eager: ``torch.inference_mode``, torch's default thread count.
* OpenVINO: the IR of anomalib's ``to_openvino(input_size=(size, size))``, reshaped to a static batch,
  ``PERFORMANCE_HINT=LATENCY``, synchronous requests. FP32 = ``INFERENCE_PRECISION_HINT f32``; bf16 =
  ``bf16`` (OpenVINO's default on CPUs with bf16 instructions); INT8 = anomalib's ``INT8_PTQ`` IR (NNCF
  defaults on the whole graph) and, for DivideAssemble, the plugin's INT8 (only the convolutions, which
  keeps detection quality: ``anomalib_divass.models.divide_assemble.export.quantize_convolutions``), their
  unquantized layers at OpenVINO's default precision. anomalib's PatchCore export comes out with a fixed
  batch of 2 (torch.export specializes it) and cannot be reshaped: it is exported once per batch size.
* PaDiM (resnet18) and PatchCore (wide_resnet50_2) are anomalib's, built with ``pre_trained=False``:
  no ImageNet weights can be downloaded here, and timing does not depend on weight values. PaDiM's
  Gaussian is fitted on the calibration images; PatchCore's memory bank is filled with random
  features of the size coreset sampling keeps for MVTec AD bottle (209 training images x 1024 patches
  x 0.1 = 21,402 entries; ``--patchcore-bank``). DivideAssemble loads ``--ckpt`` if given, else it is
  freshly initialised. INT8 calibration uses random images: fine for timing, not for quality (see
  ``benchmarks/precision.py`` for quality).
* GFLOP/image: ``torch.utils.flop_counter.FlopCounterMode`` on the PyTorch forward (convolutions and
  matrix products, 2 FLOPs per multiply-accumulate). Peaks: best of a 2048 x 2048 matrix product in
  torch (fp32, ``benchmarks/speed.py``) and in OpenVINO (f32, bf16, int8); each row is compared with
  the peak of its precision (INT8 rows with the int8 peak).
* "other CPU %": the share of all cores that other processes used during the run (``/proc/stat``).

The machine helpers (CPU name, load meter, timing loop, FLOP counter, torch matmul peak) are those of
``benchmarks/speed.py``.

Usage:
    python benchmarks/openvino_speed.py [--size 256] [--seconds 3] [--ckpt model.ckpt] [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from speed import MATMUL_SIZE, CpuMeter, count_gflop, cpu_model, matmul_peak_gflops, time_calls

PATCHCORE_BANK = 209 * 1024 // 10  # MVTec AD bottle: 209 training images x 32 x 32 patches x coreset ratio 0.1
CALIBRATION_IMAGES = 16
TARGET_FP32 = 1.5  # OpenVINO FP32 vs eager
TARGET_LOW = 4.0  # bf16 or INT8 vs eager
BUSY_PERCENT = 10.0


# --------------------------------------------------------------------------- machine


def instruction_sets() -> str:
    """The CPU's instruction sets that matter for bf16 / int8 (``/proc/cpuinfo``)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "instruction sets unknown"
    match = re.search(r"^flags\s*:\s*(.+)$", text, flags=re.MULTILINE)
    flags = set(match.group(1).split()) if match else set()
    wanted = ["avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni"]
    missing = [flag for flag in wanted if flag.startswith("amx") and flag not in flags]
    return f"{', '.join(flag for flag in wanted if flag in flags)}; no {', '.join(missing) or '-'}"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' progress prints."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def matmul_peaks(seconds: float, threads: int | None = None) -> dict[str, float]:
    """Best GFLOP/s of a 2048 x 2048 matrix product: torch fp32 (``speed.py``), OpenVINO f32/bf16/int8."""
    import nncf
    import openvino as ov
    import openvino.opset13 as ops

    flop = 2 * MATMUL_SIZE**3
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.rand(MATMUL_SIZE, MATMUL_SIZE, generator=generator) for _ in range(2))
    peaks = {"torch fp32": matmul_peak_gflops(repeats=20)[0]}
    parameter = ops.parameter([MATMUL_SIZE, MATMUL_SIZE], np.float32)
    matmul = ov.Model([ops.matmul(parameter, ops.constant(b.numpy()), False, False)], [parameter])
    with quiet():
        int8 = nncf.quantize(matmul, nncf.Dataset([a.numpy()]), subset_size=1)
    core = ov.Core()
    for name, model, precision in (
        ("OpenVINO f32", matmul, "f32"),
        ("OpenVINO bf16", matmul, "bf16"),
        ("OpenVINO int8", int8, "bf16"),
    ):
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        request = core.compile_model(model, "CPU", config).create_infer_request()
        data = a.numpy()
        peaks[name] = flop / min(time_calls(lambda r=request, d=data: r.infer([d]), 2, 50, seconds)) / 1e9
    return peaks


# --------------------------------------------------------------------------- models


def finite_post_processor(module: torch.nn.Module) -> None:
    """Give an unfitted post-processor finite statistics (a fitted one would learn them from validation)."""
    post = module.post_processor
    for name, value in (
        ("_image_threshold", 0.5),
        ("_pixel_threshold", 0.5),
        ("image_min", 0.0),
        ("image_max", 1.0),
        ("pixel_min", 0.0),
        ("pixel_max", 1.0),
    ):
        buffer = getattr(post, name)
        if torch.isnan(buffer).all():
            buffer.fill_(value)


def build_models(ckpt: Path | None, calibration: torch.Tensor, bank: int) -> dict[str, torch.nn.Module]:
    """DivideAssemble, PaDiM and PatchCore in eval mode, ready to score (see the module docstring)."""
    from anomalib.models import Padim, Patchcore

    from anomalib_divass import DivideAssemble

    torch.manual_seed(0)
    divide_assemble = DivideAssemble.load_from_checkpoint(ckpt) if ckpt else DivideAssemble()
    padim = Padim(pre_trained=False)
    padim.model.train()
    with torch.no_grad():
        padim.model(padim.pre_processor.transform(calibration))
    padim.model.fit()
    patchcore = Patchcore(pre_trained=False)
    with torch.no_grad():
        patchcore.model.train()
        dims = patchcore.model(patchcore.pre_processor.transform(calibration[:1])).shape[-1]
        patchcore.model.embedding_store = []
    patchcore.model.memory_bank = torch.randn(bank, dims, generator=torch.Generator().manual_seed(0))
    models = {"DivideAssemble": divide_assemble, "PaDiM": padim, "PatchCore": patchcore}
    for model in models.values():
        finite_post_processor(model)
        model.eval()
    return models


class ExportImages:
    """The part of a datamodule anomalib's INT8_PTQ reads: ``val_dataloader()`` yields the calibration images.

    anomalib sets ``train_batch_size`` to the IR's batch when that is static (PatchCore's export is).
    """

    def __init__(self, images: torch.Tensor) -> None:
        self.images = [{"image": image} for image in images]
        self.train_batch_size = 1

    def setup(self, stage: str | None = None) -> None:
        """In memory already."""
        del stage

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        """Batches of calibration images."""
        return torch.utils.data.DataLoader(self.images, batch_size=self.train_batch_size)


def export(
    name: str, model: torch.nn.Module, root: Path, size: int, calibration: torch.Tensor, batch: int | None = None
) -> dict[str, Path]:
    """FP32 and INT8_PTQ IRs through anomalib's ``to_openvino`` with a fixed input size.

    ``batch`` fixes the batch dimension too (for exports whose batch torch.export specializes anyway).
    DivideAssemble also gets the plugin's INT8
    (:func:`anomalib_divass.models.divide_assemble.export.quantize_convolutions`).
    """
    import openvino as ov
    from anomalib.deploy import CompressionType

    from anomalib_divass.models.divide_assemble.export import quantize_convolutions

    extra: dict[str, Any] = {"onnx_kwargs": {"dynamic_shapes": ({0: batch},)}} if batch else {}
    from anomalib.models.components.base.export_mixin import ExportMixin

    with quiet():
        fp32 = model.to_openvino(root / "fp32", input_size=(size, size), **extra)
        int8 = ExportMixin.to_openvino(  # anomalib's own INT8_PTQ, also when the model overrides it
            model,
            root / "int8",
            input_size=(size, size),
            compression_type=CompressionType.INT8_PTQ,
            datamodule=ExportImages(calibration),
            **extra,
        )
        irs = {"fp32": fp32, "int8": int8}
        if name == "DivideAssemble":
            samples = [image[None] for image in calibration]
            if batch:
                samples = [torch.cat(samples[i : i + batch]) for i in range(0, len(samples) - batch + 1, batch)]
            quantized = quantize_convolutions(ov.Core().read_model(str(fp32)), samples)
            irs["int8_plugin"] = root / "int8_plugin" / "model.xml"
            ov.save_model(quantized, str(irs["int8_plugin"]), compress_to_fp16=False)
    return irs


def export_per_batch(
    name: str, model: torch.nn.Module, root: Path, size: int, calibration: torch.Tensor, batches: Sequence[int]
) -> dict[int, dict[str, Path]]:
    """IRs for every batch size: one batch-dynamic export, or one export per batch when the batch came out static.

    anomalib's PatchCore export is fixed at batch 2 (torch.export specializes its batch dimension), and
    cannot be reshaped to another batch.
    """
    import openvino as ov

    irs = export(name, model, root / "dynamic", size, calibration)
    if ov.Core().read_model(str(irs["fp32"])).input(0).get_partial_shape()[0].is_dynamic:
        return dict.fromkeys(batches, irs)
    return {batch: export(name, model, root / f"batch{batch}", size, calibration, batch) for batch in batches}


# --------------------------------------------------------------------------- measurements


@dataclass
class Row:
    """One line of the table."""

    model: str
    path: str
    batch: int
    median_ms: float
    calls: int
    gflop: float
    peak_name: str

    @property
    def images_per_s(self) -> float:
        """Batch over median latency."""
        return self.batch / self.median_ms * 1e3


def openvino_runner(
    path: Path, batch: int, size: int, precision: str | None, threads: int | None = None
) -> Callable[[np.ndarray], object]:
    """A synchronous request of the IR reshaped to a static batch."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.input(0).get_any_name(): [batch, 3, size, size]})
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    request = core.compile_model(model, "CPU", config).create_infer_request()
    return lambda images: request.infer([images])


def measure(args: argparse.Namespace, stack: contextlib.ExitStack) -> tuple[list[Row], dict[str, float], float | None]:
    """Export, then time every (model, path, batch); returns rows, peaks and the other processes' CPU %.

    The exported models go to a temporary folder that ``stack`` removes.
    """
    size, batches = args.size, args.batches
    generator = torch.Generator().manual_seed(0)
    calibration = torch.rand(CALIBRATION_IMAGES, 3, size, size, generator=generator)
    images = {batch: torch.rand(batch, 3, size, size, generator=generator) for batch in batches}
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="divass_speed_")))
    with quiet():
        models = build_models(args.ckpt, calibration, args.patchcore_bank)
    if args.models:
        models = {name: model for name, model in models.items() if name in args.models}
    irs = {
        name: export_per_batch(name, model, work / name, size, calibration, batches) for name, model in models.items()
    }
    load = CpuMeter()
    peaks = matmul_peaks(min(args.seconds, 2.0), args.threads)
    rows: list[Row] = []
    for name, model in models.items():
        with torch.no_grad():
            gflop = count_gflop(lambda m=model: m(torch.rand(1, 3, size, size)))
        for batch in batches:
            x = images[batch]
            with torch.inference_mode():
                durations = time_calls(lambda m=model, x=x: m(x), args.warmup, args.max_calls, args.seconds)
            rows.append(
                Row(
                    name, "PyTorch eager fp32", batch, 1e3 * statistics.median(durations), len(durations), gflop, "fp32"
                )
            )
            paths = [
                ("OpenVINO FP32", "fp32", "f32", "fp32"),
                ("OpenVINO bf16", "fp32", "bf16", "bf16"),
                ("OpenVINO INT8 (anomalib PTQ)", "int8", None, "int8"),
            ]
            if "int8_plugin" in irs[name][batch]:
                paths.append(("OpenVINO INT8 (plugin: convolutions)", "int8_plugin", None, "int8"))
            for label, ir, precision, peak in paths:
                run = openvino_runner(irs[name][batch][ir], batch, size, precision, args.threads)
                data = x.numpy()
                durations = time_calls(lambda r=run, d=data: r(d), args.warmup, args.max_calls, args.seconds)
                rows.append(Row(name, label, batch, 1e3 * statistics.median(durations), len(durations), gflop, peak))
            print(f"  measured {name} batch {batch}", file=sys.stderr, flush=True)
    return rows, peaks, load.other_percent()


# --------------------------------------------------------------------------- report


def peak_for(kind: str, peaks: dict[str, float]) -> float:
    """The measured peak of a precision (best of torch and OpenVINO)."""
    keys = {"fp32": ("torch fp32", "OpenVINO f32"), "bf16": ("OpenVINO bf16",), "int8": ("OpenVINO int8",)}
    return max(peaks[key] for key in keys[kind])


def render(rows: Sequence[Row], peaks: dict[str, float]) -> str:
    """The markdown table."""
    eager = {(row.model, row.batch): row for row in rows if row.path.startswith("PyTorch")}
    lines = [
        "| model | path | batch | images/s | median ms | x eager | GFLOP/image | GFLOP/s | % of peak | calls |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        speedup = row.images_per_s / eager[(row.model, row.batch)].images_per_s
        achieved = row.gflop * row.images_per_s
        percent = 100 * achieved / peak_for(row.peak_name, peaks)
        lines.append(
            f"| {row.model} | {row.path} | {row.batch} | {row.images_per_s:.1f} | {row.median_ms:.1f} | "
            f"{speedup:.2f} | {row.gflop:.2f} | {achieved:.0f} | {percent:.0f} % ({row.peak_name}) | {row.calls} |"
        )
    return "\n".join(lines)


def verdicts(rows: Sequence[Row]) -> list[str]:
    """PASS/MISS lines for the issue's targets."""
    by = {(row.model, row.path, row.batch): row for row in rows}
    lines = []
    batches = sorted({row.batch for row in rows})
    for model in dict.fromkeys(row.model for row in rows):
        for batch in batches:
            eager = by[(model, "PyTorch eager fp32", batch)].images_per_s
            fp32 = by[(model, "OpenVINO FP32", batch)].images_per_s / eager
            low = (
                max(
                    row.images_per_s
                    for row in rows
                    if row.model == model
                    and row.batch == batch
                    and row.path.startswith(("OpenVINO bf16", "OpenVINO INT8"))
                )
                / eager
            )
            lines.append(
                f"- {model}, batch {batch}: OpenVINO FP32 {fp32:.2f}x eager "
                f"({'PASS' if fp32 >= TARGET_FP32 else 'MISS'} >= {TARGET_FP32}x); best of bf16/INT8 {low:.2f}x "
                f"({'PASS' if low >= TARGET_LOW else 'MISS'} >= {TARGET_LOW}x)"
            )
    if {"DivideAssemble", "PatchCore"} <= {row.model for row in rows}:
        for batch in batches:
            fastest = {
                model: max(row.images_per_s for row in rows if row.model == model and row.batch == batch)
                for model in ("DivideAssemble", "PatchCore")
            }
            ratio = fastest["DivideAssemble"] / fastest["PatchCore"]
            status = "PASS" if ratio > 1 else "MISS"
            lines.append(f"- batch {batch}: fastest DivideAssemble / fastest PatchCore = {ratio:.1f}x ({status} > 1)")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per row (at least 3 calls)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--max-calls", type=int, default=200)
    parser.add_argument("--ckpt", type=Path, default=None, help="trained DivideAssemble checkpoint (optional)")
    parser.add_argument("--patchcore-bank", type=int, default=PATCHCORE_BANK, help="PatchCore memory bank entries")
    parser.add_argument("--models", nargs="*", default=None, choices=["DivideAssemble", "PaDiM", "PatchCore"])
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for torch and OpenVINO (default: each library's own; 1 gives a fair per-core comparison "
        "when other processes load the machine)",
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (1 s per row, 2 warm-up calls)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup = 1.0, 2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    import openvino as ov

    began = time.perf_counter()
    with contextlib.ExitStack() as stack:
        rows, peaks, other = measure(args, stack)
    print(f"# Inference speed at {args.size} x {args.size} on {cpu_model()} ({instruction_sets()})")
    load = f"{other:.0f} %" if other is not None else "unknown"
    print(
        f"{os.cpu_count()} logical CPUs; torch {torch.__version__} with {torch.get_num_threads()} threads; "
        f"OpenVINO {ov.get_version().split('-')[0]} with {args.threads or 'its default'} threads; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; other processes used {load} of the CPUs "
        "during the run"
    )
    if other is not None and other > BUSY_PERCENT:
        print(
            "WARNING: other processes were busy. Eager PyTorch with several OpenMP threads suffers most (threads "
            "wait at barriers for descheduled peers): compare with --threads 1, or re-run on an idle machine."
        )
    print("Matrix-product peaks (2048 x 2048, GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    print("PaDiM and PatchCore: anomalib's, pre_trained=False (untrained backbones; timing only).\n")
    print(render(rows, peaks))
    print()
    print("\n".join(verdicts(rows)))
    print(f"\n(run took {time.perf_counter() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
