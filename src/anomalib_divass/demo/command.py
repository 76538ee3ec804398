"""The main job of the README: train DivideAssemble on the embedded demo dataset.

Generates the demo category (a metal washer with scratches, cracks, stains and notches, in
MVTec AD layout) if it is not there yet, trains and tests DivideAssemble through anomalib's
command line, and prints the image and pixel AUROC, where the visualizations are and, last, the
path of the HTML report of the test images (``anomalib-divass report``).

Example:
    anomalib-divass demo                     # embedded demo data, offline
    anomalib-divass demo --data.root ../shared/datasets/mvtec_ad --data.category bottle
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .data import make_demo_category

__all__ = ["run_demo"]

DEMO_ROOT = Path("datasets/divass_demo")
DEMO_CATEGORY = "washer"


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="anomalib-divass demo",
        description="Train and test DivideAssemble through the anomalib CLI; other flags go to `anomalib train`.",
    )
    parser.add_argument("--data.root", dest="root", type=Path, default=None, help="MVTec-layout root (default: demo)")
    parser.add_argument("--data.category", dest="category", default=None, help="category folder")
    parser.add_argument("--trainer.max_epochs", dest="epochs", type=int, default=30, help="training epochs")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results folder")
    return parser.parse_known_args(list(argv))


def run_demo(argv: Sequence[str] = ()) -> dict[str, float]:
    """Run the demo and return the test metrics.

    Args:
        argv: Command-line arguments; unknown ones are passed to ``anomalib train``.

    Returns:
        The test metrics, e.g. ``{"image_AUROC": 0.98, "pixel_AUROC": 0.95, ...}``.
    """
    from anomalib.cli import AnomalibCLI  # noqa: PLC0415  (heavy import, only when running)

    args, extra = _parse(argv)
    root, category = args.root, args.category
    if root is None:
        root, category = DEMO_ROOT, category or DEMO_CATEGORY
        print(f"Demo data: {make_demo_category(root, category)}")
    category = category or "bottle"
    cli_args = [
        "train",
        "--model",
        "DivideAssemble",
        "--data",
        "MVTec",
        "--data.root",
        str(root),
        "--data.category",
        category,
        "--data.train_batch_size",
        "8",
        "--trainer.max_epochs",
        str(args.epochs),
        "--default_root_dir",
        str(args.results),
        *extra,
    ]
    print("anomalib " + " ".join(cli_args))
    cli = AnomalibCLI(args=cli_args)
    trainer = cli.engine.trainer
    metrics = {
        name: float(value) for name, value in trainer.callback_metrics.items() if name[:6] in {"image_", "pixel_"}
    }
    images = Path(trainer.default_root_dir) / "images"
    print("\nDivideAssemble on", Path(root) / category)
    for name in ("image_AUROC", "pixel_AUROC", "image_F1Score", "pixel_F1Score"):
        if name in metrics:
            print(f"  {name:14s} {metrics[name]:.3f}")
    print(f"Visualizations: {images.resolve()}")
    print(f"Checkpoint:     {Path(trainer.checkpoint_callback.best_model_path).resolve()}")
    _print_report(Path(trainer.default_root_dir))
    return metrics


def _print_report(results: Path) -> None:
    """Write the HTML report of the test run into ``<results>/report`` and print its path (or why not)."""
    from anomalib_divass.report import read_results, write_report  # noqa: PLC0415

    try:
        page = write_report(read_results(results), results / "report")
    except (OSError, ValueError) as error:
        print(f"Report:         not written ({error})")
        return
    print(f"Report:         {page.resolve()}  (open it in a browser: reconstructions, maps, scores)")
