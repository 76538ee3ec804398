"""A report a person can browse: one static HTML page of a run, with its pictures beside it.

``anomalib-divass report RESULTS`` (or ``predict-folder --report DIR``) writes ``index.html`` and ``images/``
into a folder: the run's summary (model, data, threshold, counts, AUROC and ROC curve where labels exist) and
every image as a row, sorted by score, filterable by predicted label, defect type and true label, with its
panel (image, reconstruction, ground truth, map overlay, predicted mask) as a thumbnail that opens large on a
click. It needs no server and no internet; rows are shown a page at a time and thumbnails load lazily, so
10,000 images stay fast.

* :mod:`.sources`: the rows, from anomalib's results folder or from ``predict-folder``'s CSV.
* :mod:`.pictures`: thumbnails and large pictures (Pillow).
* :mod:`.page`: the page; :mod:`.roc`: AUROC and the ROC curve as SVG.
* :mod:`.command`: ``anomalib-divass report``.

Example:
    >>> from anomalib_divass.report import read_source, write_report
    >>> write_report(read_source("results/DivideAssemble/MVTecAD/bottle/latest"), "report")  # doctest: +SKIP
    PosixPath('report/index.html')

"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .page import DEFAULT_PAGE_SIZE, render_page
from .pictures import make_pictures
from .sources import ReportRow, ReportSource, RunSummary, read_folder_predictions, read_results, read_source

__all__ = [
    "PAGE_NAME",
    "ReportRow",
    "ReportSource",
    "RunSummary",
    "read_folder_predictions",
    "read_results",
    "read_source",
    "write_report",
]

PAGE_NAME = "index.html"


def write_report(
    source: ReportSource,
    folder: str | Path,
    title: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the report of ``source`` into ``folder``: ``index.html`` and ``images/`` (thumbnails, large).

    Pictures already there and newer than their source are kept; the page is replaced atomically.

    Args:
        source: Rows and summary (see :func:`read_source`).
        folder: The report folder (created).
        title: Page title (default: model, data and category).
        page_size: Rows per page of the list.
        workers: Threads making pictures (default: the CPUs, at most 8).
        on_progress: Called with ``(done, total)`` while pictures are made.

    Returns:
        The page.

    Raises:
        OSError: If the folder cannot be written (the message names it).

    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        msg = f"Cannot create the report folder '{folder}' ({error}). Pass another output folder."
        raise OSError(msg) from error
    pictures = make_pictures(source.rows, folder, workers, on_progress)
    page = render_page(source, pictures, title, page_size)
    target = folder / PAGE_NAME
    handle, temporary = tempfile.mkstemp(prefix=".index.", suffix=".html", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(page)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return target
