"""``anomalib-divass predict-folder`` (also ``python -m anomalib_divass.inference``): score a folder into a CSV.

Example:
    anomalib-divass predict-folder --model exports/bottle/weights/openvino/model.xml --data images/ --resume

"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .folder import score_folder
from .stream import Failure, Prediction

__all__ = ["add_arguments", "main", "predict_with_exported_model", "run_command"]


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
        results: Results root: the command's ``--default_root_dir`` (anomalib's default ``results``).

    Returns:
        The folder command's exit status (0 all scored, 1 some unreadable images skipped, 2 an error).

    """
    root = Path(results) / "DivideAssemble" / "exported"
    versions = [int(path.name[1:]) for path in root.glob("v*") if path.name[1:].isdigit()]
    folder = root / f"v{max(versions, default=-1) + 1}"
    try:
        folder.mkdir(parents=True)
    except OSError as error:
        print(
            f"error: cannot create the results folder '{folder}' ({error}). Pass --default_root_dir with a "
            f"folder you can write to.",
            file=sys.stderr,
        )
        return 2
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
    parser.add_argument(
        "--report",
        default=None,
        help="also write a browsable HTML report of the run into this folder (masks go to <report>/masks unless "
        "--masks is given); see `anomalib-divass report`",
    )
    parser.add_argument("--precision", default="auto", choices=["auto", "f32", "bf16", "f16"])
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--workers", type=int, default=None, help="image reader threads (default: CPUs, at most 8)")
    parser.add_argument("--threads", type=int, default=None, help="OpenVINO inference threads (default: all cores)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the scored rows of an existing --output and score only the other images (unreadable ones again)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not print one line per image")
    parser.add_argument(
        "--no-resize",
        action="store_true",
        help="feed images as they are (the graph resizes without antialiasing; a fixed-size model refuses other sizes)",
    )


def run_command(args: argparse.Namespace) -> int:
    """Run the folder command with parsed :func:`add_arguments` arguments; see :func:`main`."""
    report = getattr(args, "report", None)
    if report is not None and args.masks is None:
        args.masks = str(Path(report) / "masks")  # the report shows the predicted masks

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
    notes = [f"{summary.resumed} already in the CSV were skipped"] if summary.resumed else []
    notes += [f"{summary.retried} unreadable before were tried again"] if summary.retried else []
    resumed = f" ({', '.join(notes)})" if notes else ""
    failed = f", {len(summary.failed)} unreadable skipped" if summary.failed else ""
    print(
        f"{summary.scored} images, {summary.anomalous} anomalous{failed}{resumed}. "
        f"Scores written to {os.fspath(args.output)}"
    )
    if report is not None:
        return _write_report(args, report) or (1 if summary.failed else 0)
    return 1 if summary.failed else 0


def _write_report(args: argparse.Namespace, folder: str | Path) -> int:
    """Write the HTML report of the CSV just written; 0, or 2 with the error on stderr."""
    from anomalib_divass.report import read_folder_predictions, write_report  # noqa: PLC0415

    try:
        page = write_report(read_folder_predictions(args.output, args.masks, args.data), folder)
    except (OSError, ValueError) as error:
        print(f"error: the report could not be written: {error}", file=sys.stderr)
        return 2
    print(f"Report: {page.resolve()}")
    return 0
