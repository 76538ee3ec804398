"""``anomalib-divass report``: the browsable HTML report of a test, predict or predict-folder run.

Example:
    anomalib-divass report results/DivideAssemble/MVTecAD/bottle/latest
    anomalib-divass report predictions.csv --masks masks/ --data images/ --output report/

"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import write_report
from .page import DEFAULT_PAGE_SIZE
from .sources import ReportSource, read_source

__all__ = ["default_folder", "main"]


def main(argv: Sequence[str] | None = None, prog: str = "anomalib-divass report") -> int:
    """Command line: write the report of a run and print where it is.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
        prog: The command's name in its help.

    Returns:
        Exit status: 0 written, 2 an error (said on stderr).

    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write a static HTML report of a run (one page and its pictures; opens from disk, no server): "
        "summary, AUROC and ROC where labels exist, every image with its score, sorted and filterable, with the "
        "image, reconstruction, anomaly map, predicted and true mask.",
    )
    parser.add_argument(
        "source",
        type=Path,
        help="results folder of `anomalib test`/`anomalib predict` with DivideAssemble "
        "(e.g. results/DivideAssemble/MVTecAD/bottle/latest; a folder above it takes the newest run), "
        "or the CSV of `anomalib-divass predict-folder`",
    )
    parser.add_argument("--output", type=Path, default=None, help="report folder (default: <run>/report)")
    parser.add_argument("--masks", type=Path, default=None, help="predict-folder CSV only: its --masks folder")
    parser.add_argument("--data", type=Path, default=None, help="predict-folder CSV only: its --data folder")
    parser.add_argument("--title", default=None, help="page title (default: model, dataset and category)")
    parser.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE, help="rows per page (default: 100)")
    parser.add_argument("--workers", type=int, default=None, help="threads making thumbnails (default: CPUs, max 8)")
    args = parser.parse_args(argv)
    if args.page_size < 1:
        parser.error(f"--page-size must be >= 1, got {args.page_size}")
    try:
        source = read_source(args.source, args.masks, args.data)
        output = args.output or default_folder(source)
        page = write_report(source, output, args.title, args.page_size, args.workers, _progress)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Report of {len(source.rows)} images: {page.resolve()}")
    return 0


def default_folder(source: ReportSource) -> Path:
    """``<results folder>/report`` for anomalib's runs, ``<CSV's folder>/report`` for predict-folder's."""
    origin = source.summary.source
    return (origin.parent if origin.is_file() else origin) / "report"


def _progress(done: int, total: int) -> None:
    print(f"  pictures {done}/{total}", flush=True)
