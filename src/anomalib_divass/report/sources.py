"""What a report shows, read from a run: anomalib's results folder, or the CSV of ``predict-folder``.

* :func:`read_results`: ``anomalib test`` / ``anomalib predict`` with DivideAssemble. Its visualizer writes the
  panels (image, reconstruction, ground truth, map overlay, predicted mask) under ``<results>/images`` and next
  to them ``predictions.csv`` (one row per panel) and ``run.json`` (model, data, threshold, test metrics); see
  :mod:`anomalib_divass.models.divide_assemble.visualizer`.
* :func:`read_folder_predictions`: ``anomalib-divass predict-folder``'s CSV (``image, pred_score, pred_label,
  anomalous_fraction, error``) and, where written, its predicted masks (``--masks``).

Example:
    >>> run = read_results("results/DivideAssemble/MVTecAD/bottle/latest")  # doctest: +SKIP
    >>> run.summary.category, len(run.rows)  # doctest: +SKIP
    ('bottle', 83)

"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomalib_divass.models.divide_assemble.visualizer import PREDICTIONS_FIELDS, PREDICTIONS_FILE, RUN_FILE

__all__ = [
    "FOLDER_CSV_FIELDS",
    "ReportRow",
    "ReportSource",
    "RunSummary",
    "find_predictions",
    "read_folder_predictions",
    "read_results",
    "read_source",
]

# The columns of ``predict-folder``'s CSV (see ``anomalib_divass.inference.writer``).
FOLDER_CSV_FIELDS = ("image", "pred_score", "pred_label", "anomalous_fraction", "error")


@dataclass
class ReportRow:
    """One image of the report.

    Attributes:
        name: What the page calls it: the image's path below the data root (e.g. ``test/crack/000.png``).
        image: The image file, if known.
        score: Anomaly score (``None`` for an unreadable image).
        pred_label: 1 anomalous, 0 normal (``None`` when unscored).
        gt_label: The true label where the data has one (1 anomalous, 0 normal), else ``None``.
        defect_type: The image's folder (``good``, ``crack``...), ``""`` at the root.
        panel: anomalib's panel of the image (with the reconstruction where the model kept it), or ``None``.
        mask: ``predict-folder``'s predicted mask (PNG), or ``None``.
        reconstruction: Whether the panel shows the reconstruction.
        gt_mask: Whether the ground-truth mask is known (then it is in the panel).
        error: Why the image could not be scored (empty if it was).

    """

    name: str
    image: Path | None
    score: float | None
    pred_label: int | None
    gt_label: int | None = None
    defect_type: str = ""
    panel: Path | None = None
    mask: Path | None = None
    reconstruction: bool = False
    gt_mask: bool = False
    error: str = ""


@dataclass
class RunSummary:
    """The run a report is made of.

    Attributes:
        source: The folder or file the rows were read from.
        kind: ``"anomalib"`` (test/predict results folder) or ``"predict-folder"``.
        model: Model name (e.g. ``DivideAssemble``).
        variant: Model variant (``DAAD``...), if known.
        stage: ``test`` or ``predict`` (anomalib), ``predict-folder``.
        dataset: Dataset name (``MVTecAD``), or the image folder.
        category: Category, if any.
        threshold: Image threshold on the score scale of the rows, if known.
        raw_threshold: The threshold on the model's raw score scale, if the scores are normalised.
        metrics: The run's own metrics (anomalib's test metrics: ``image_AUROC``, ``pixel_AUROC``...).
        notes: Lines worth telling the reader (missing files, what is not shown and why).

    """

    source: Path
    kind: str
    model: str = "DivideAssemble"
    variant: str | None = None
    stage: str = ""
    dataset: str | None = None
    category: str | None = None
    threshold: float | None = None
    raw_threshold: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class ReportSource:
    """The rows of a report and the run they come from."""

    summary: RunSummary
    rows: list[ReportRow]


def read_source(path: str | Path, masks: str | Path | None = None, data: str | Path | None = None) -> ReportSource:
    """Read a results folder of anomalib or a ``predict-folder`` CSV, whichever ``path`` is.

    Args:
        path: A results folder (``results/DivideAssemble/MVTecAD/bottle/latest``, its ``images`` folder, or a
            folder above them: the newest run below it is taken), a ``predictions.csv`` of either kind.
        masks: ``predict-folder``'s mask folder (``--masks``), for its CSV.
        data: The image folder ``predict-folder`` scored (``--data``), for its CSV (default: found from the paths).

    Returns:
        Rows and summary.

    Raises:
        FileNotFoundError: If ``path`` holds no predictions this module can read (the message says what to run).
        ValueError: If a CSV has other columns.

    """
    path = Path(path)
    if path.is_file():
        header = _header(path)
        if tuple(header) == FOLDER_CSV_FIELDS:
            return read_folder_predictions(path, masks, data)
        if tuple(header[: len(PREDICTIONS_FIELDS)]) == PREDICTIONS_FIELDS:
            return read_results(path.parent)
        msg = (
            f"'{path}' is neither a predictions.csv of DivideAssemble's visualizer ({', '.join(PREDICTIONS_FIELDS)}) "
            f"nor one of predict-folder ({', '.join(FOLDER_CSV_FIELDS)}); its columns are {header}."
        )
        raise ValueError(msg)
    return read_results(path)


def find_predictions(path: str | Path) -> Path:
    """The ``predictions.csv`` of DivideAssemble's visualizer in or below ``path`` (the newest when several).

    Args:
        path: A results folder, its ``images`` folder or a folder above.

    Returns:
        The CSV.

    Raises:
        FileNotFoundError: If there is none (the message says what writes it).

    """
    path = Path(path)
    for candidate in (path / PREDICTIONS_FILE, path / "images" / PREDICTIONS_FILE):
        if candidate.is_file():
            return candidate
    if not path.exists():
        msg = f"No results folder at '{path}'. Pass the folder of an `anomalib test` or `anomalib predict` run."
        raise FileNotFoundError(msg)
    found = {
        candidate.resolve(): candidate
        for candidate in path.rglob(PREDICTIONS_FILE)
        if (candidate.parent / RUN_FILE).is_file() or tuple(_header(candidate)) == PREDICTIONS_FIELDS
    }
    if not found:
        msg = (
            f"No {PREDICTIONS_FILE} in or below '{path}'. DivideAssemble's visualizer writes it next to its pictures "
            f"(<results>/images/) during `anomalib test` or `anomalib predict --model DivideAssemble`; for "
            f"predict-folder pass its CSV."
        )
        raise FileNotFoundError(msg)
    return max(found.values(), key=lambda candidate: candidate.stat().st_mtime)


def read_results(path: str | Path) -> ReportSource:
    """Read the panels and rows that DivideAssemble's visualizer wrote during ``anomalib test`` / ``predict``.

    Args:
        path: See :func:`find_predictions`.

    Returns:
        Rows (in the CSV's order) and summary.

    """
    predictions = find_predictions(path)
    folder = predictions.parent
    run: dict[str, Any] = {}
    if (folder / RUN_FILE).is_file():
        try:
            run = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            run = {}
    data_root = run.get("data_root")
    rows = []
    missing = 0
    with predictions.open(newline="", encoding="utf-8") as file:
        for record in csv.DictReader(file):
            image = Path(record["image_path"]) if record.get("image_path") else None
            panel = folder / record["panel"] if record.get("panel") else None
            if panel is not None and not panel.is_file():
                missing += 1
                panel = None
            rows.append(
                ReportRow(
                    name=_display_name(image, data_root, run.get("category"), record.get("panel", "")),
                    image=image,
                    score=_float(record.get("pred_score")),
                    pred_label=_int(record.get("pred_label")),
                    gt_label=_int(record.get("gt_label")),
                    defect_type=record.get("defect_type", ""),
                    panel=panel,
                    reconstruction=record.get("reconstruction") == "1",
                    gt_mask=record.get("gt_mask") == "1",
                )
            )
    threshold = run.get("threshold") or {}
    summary = RunSummary(
        source=folder.parent if folder.name == "images" else folder,
        kind="anomalib",
        model=run.get("model") or "DivideAssemble",
        variant=run.get("variant"),
        stage=run.get("stage") or "",
        dataset=run.get("dataset"),
        category=run.get("category"),
        threshold=_float(threshold.get("score")),
        raw_threshold=_float(threshold.get("raw")) if threshold.get("normalized") else None,
        metrics={name: float(value) for name, value in (run.get("metrics") or {}).items() if _float(value) is not None},
    )
    if not run:
        summary.notes.append(f"No {RUN_FILE} next to {predictions.name}: model, data and threshold are unknown.")
    if missing:
        summary.notes.append(f"{missing} pictures listed in {predictions} are missing.")
    if rows and not any(row.reconstruction for row in rows):
        summary.notes.append(
            "The pictures have no reconstruction (the run had --model.visualize_reconstruction false)."
        )
    return ReportSource(summary, rows)


def read_folder_predictions(
    path: str | Path, masks: str | Path | None = None, data: str | Path | None = None
) -> ReportSource:
    """Read ``predict-folder``'s CSV and, where given, its predicted masks.

    Labels are unknown (a folder of images has none); the defect type is the image's folder below ``data``.
    The exported model returns no reconstruction (see ``docs/report.md``), so the report shows the image and
    the predicted mask.

    Args:
        path: The CSV.
        masks: The mask folder (``--masks``), or ``None``.
        data: The folder that was scored (``--data``); default: the folder all images lie in.

    Returns:
        Rows (unreadable images included, with their error) and summary.

    Raises:
        ValueError: If the CSV has other columns.

    """
    path = Path(path)
    header = _header(path)
    if tuple(header) != FOLDER_CSV_FIELDS:
        msg = f"'{path}' is not a predict-folder CSV: its columns are {header}, expected {list(FOLDER_CSV_FIELDS)}."
        raise ValueError(msg)
    latest: dict[str, dict[str, str]] = {}
    with path.open(newline="", encoding="utf-8") as file:
        for record in csv.DictReader(file):
            if record.get("image"):
                latest[record["image"]] = record  # a resumed run may hold an image twice: its latest row counts
    images = [Path(image) for image in latest]
    root = Path(data) if data is not None else _common_folder(images)
    if root is not None and root.is_file():
        root = root.parent
    mask_root = Path(masks) if masks is not None else None
    rows = []
    for image, record in zip(images, latest.values(), strict=True):
        relative = _relative(image, root)
        mask = None
        if mask_root is not None and relative is not None:
            candidate = mask_root / Path(relative).with_suffix(".png")
            mask = candidate if candidate.is_file() else None
        rows.append(
            ReportRow(
                name=relative or str(image),
                image=image,
                score=_float(record.get("pred_score")),
                pred_label=_int(record.get("pred_label")),
                defect_type=Path(relative).parent.as_posix() if relative and Path(relative).parent.name else "",
                mask=mask,
                error=record.get("error", ""),
            )
        )
    summary = RunSummary(
        source=path,
        kind="predict-folder",
        stage="predict-folder",
        dataset=str(root) if root is not None else None,
        threshold=0.5,  # anomalib's normalised scores: anomalous above 0.5
    )
    summary.notes.append(
        "Exported-model run: no reconstruction (the exported graph returns scores, maps and masks only) and no "
        "labels (a folder of images has none)."
    )
    if mask_root is None:
        summary.notes.append("No mask folder given (predict-folder --masks): predicted masks are not shown.")
    return ReportSource(summary, rows)


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8", errors="replace") as file:
        return next(csv.reader(file), [])


def _float(value: Any) -> float | None:  # noqa: ANN401
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # noqa: PLR0124  (NaN)


def _int(value: Any) -> int | None:  # noqa: ANN401
    number = _float(value)
    return None if number is None else int(number)


def _common_folder(images: Iterable[Path]) -> Path | None:
    folders = [str(image.absolute().parent) for image in images]
    return Path(os.path.commonpath(folders)) if folders else None


def _relative(image: Path, root: Path | None) -> str | None:
    if root is None:
        return None
    try:
        return image.absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        return None


def _display_name(image: Path | None, data_root: str | None, category: str | None, panel: str) -> str:
    """``test/crack/000.png`` for MVTec data (the path below the category), else the panel's path."""
    if image is not None:
        parts = image.parts
        if category and category in parts:
            return Path(*parts[len(parts) - parts[::-1].index(category) :]).as_posix()
        if data_root:
            relative = _relative(image, Path(data_root))
            if relative:
                return relative
    return panel or (image.name if image is not None else "")
