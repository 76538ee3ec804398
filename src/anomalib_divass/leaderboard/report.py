"""The leaderboard's files: a CSV, a Markdown table for a README, and the charts.

Measured rows only ever come from stored pair results. Published anomalib numbers for PaDiM and
PatchCore (read from the model READMEs of the installed anomalib, ImageNet backbones) are shown in
a separate, labelled table for the MVTec AD categories they cover; they are never averaged with
or placed among measured rows.

A run with a failed pair writes ``leaderboard_INCOMPLETE.csv`` / ``.md`` (and removes a complete
``leaderboard.csv`` / ``.md`` of an earlier run in the same folder), so that an incomplete table
never looks complete. Every file is written atomically.

Example:
    >>> rows = [PairResult("DAAD", "bottle", "ok", metrics={"image_AUROC": 0.9}, train_seconds=60.0)]
    >>> markdown_table(rows).splitlines()[2].startswith("| DAAD | bottle | 0.900 | - |")
    True

"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path

from .models import MODELS, PATCHCORE_CORESET_RATIO
from .runner import METRICS, PairResult, write_atomic

__all__ = ["markdown_table", "mean_rows", "published_results", "write_reports"]

METRIC_TITLES = {
    "image_AUROC": "image AUROC",
    "pixel_AUROC": "pixel AUROC",
    "image_F1Score": "image F1",
    "pixel_F1Score": "pixel F1",
    "pixel_AUPRO": "PRO",
}
PUBLISHED_SECTIONS = {
    "Image-Level AUC": "image_AUROC",
    "Pixel-Level AUC": "pixel_AUROC",
    "Image F1 Score": "image_F1Score",
}
PUBLISHED_MODELS = {"PaDiM": "padim", "PatchCore": "patchcore"}


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _label(result: PairResult) -> str:
    """Model name with what a reader must know next to it (untrained backbone, fewer epochs)."""
    settings = result.settings
    marks = []
    if str(settings.get("backbone_weights", "")).startswith("untrained"):
        marks.append("untrained backbone")
    elif "backbone_weights" in settings:
        marks.append("local weights")
    if settings.get("coreset_sampling_ratio", PATCHCORE_CORESET_RATIO) != PATCHCORE_CORESET_RATIO:
        marks.append(f"coreset {settings['coreset_sampling_ratio']}")
    if "epochs" in settings:
        marks.append(f"{settings['epochs']} ep" if settings["epochs"] != "differs" else "epochs differ")
    return f"{result.model} ({', '.join(marks)})" if marks else result.model


def mean_rows(results: Sequence[PairResult]) -> list[PairResult]:
    """One row per model averaging its finished categories (``category`` says how many of how many)."""
    means = []
    for model in dict.fromkeys(r.model for r in results):
        rows = [r for r in results if r.model == model]
        ok = [r for r in rows if r.status == "ok"]
        if not ok:
            continue

        def mean(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None and not math.isnan(v)]
            return sum(known) / len(known) if len(known) == len(values) and known else None

        means.append(
            PairResult(
                model=model,
                category=f"mean ({len(ok)}/{len(rows)})",
                status="ok",
                metrics={name: mean([r.metrics.get(name) for r in ok]) for name in METRICS},
                train_seconds=mean([r.train_seconds for r in ok]),
                images_per_second=mean([r.images_per_second for r in ok]),
                model_size_mb=mean([r.model_size_mb for r in ok]),
                threads=ok[0].threads,
                settings={
                    key: value if all(r.settings.get(key) == value for r in ok) else "differs"
                    for key, value in ok[0].settings.items()
                },
            )
        )
    return means


def markdown_table(results: Sequence[PairResult]) -> str:
    """A Markdown table of measured rows (failed rows say so)."""
    threads = sorted({r.threads for r in results}) or [1]
    thread_note = f"{'/'.join(map(str, threads))} thread{'s' if threads != [1] else ''}"
    timing = [f"train time (s, {thread_note})", f"inference (img/s, {thread_note})", "size (MB)"]
    header = ["model", "category", *METRIC_TITLES.values(), *timing]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        if r.status != "ok":
            lines.append(f"| {_label(r)} | {r.category} | FAILED: {r.error[:80]} |" + " |" * (len(header) - 3))
            continue
        cells = [_number(r.metrics.get(name)) for name in METRICS]
        cells += [_number(r.train_seconds, 0), _number(r.images_per_second, 1), _number(r.model_size_mb, 1)]
        lines.append(f"| {_label(r)} | {r.category} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def published_results(category: str) -> list[tuple[str, str, dict[str, float]]]:
    """Published MVTec AD results for PaDiM and PatchCore on ``category``.

    Read from the model READMEs of the installed anomalib. Returns ``(model, backbone, metrics)``
    rows; none if the category is not an MVTec AD category there.
    """
    import anomalib  # noqa: PLC0415

    rows = []
    for model, folder in PUBLISHED_MODELS.items():
        readme = Path(anomalib.__file__).parent / "models" / "image" / folder / "README.md"
        if not readme.is_file():
            continue
        by_backbone: dict[str, dict[str, float]] = {}
        for section, metric in PUBLISHED_SECTIONS.items():
            match = re.search(rf"### {re.escape(section)}\s*\n\s*\n((?:\|.*\n)+)", readme.read_text())
            if not match:
                continue
            lines = match.group(1).splitlines()
            table = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
            columns = [c.lower().replace(" ", "_") for c in table[0]]
            if category.lower() not in columns:
                continue
            column = columns.index(category.lower())
            for row in table[2:]:
                by_backbone.setdefault(row[0], {})[metric] = float(row[column])
        rows += [(model, backbone, metrics) for backbone, metrics in by_backbone.items()]
    return rows


def _published_markdown(categories: Sequence[str]) -> str:
    lines = []
    for category in categories:
        for model, backbone, metrics in published_results(category):
            cells = [_number(metrics.get(name)) for name in METRICS]
            lines.append(f"| {model} ({backbone}, ImageNet) | {category} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    header = "| model | category | " + " | ".join(METRIC_TITLES.values()) + " |"
    return (
        "\n\n### Published by anomalib (not measured here)\n\n"
        "From the PaDiM and PatchCore READMEs of the installed anomalib (MVTec AD, ImageNet-pretrained "
        "backbones, seed 42). Listed for reference only; not comparable with the untrained-backbone rows above.\n\n"
        + header
        + "\n|"
        + "---|" * (len(METRIC_TITLES) + 2)
        + "\n"
        + "\n".join(lines)
    )


def _csv(results: Sequence[PairResult]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    costs = ["train_seconds", "images_per_second", "model_size_mb", "threads"]
    writer.writerow(["model", "category", "status", *METRICS, *costs, "settings", "notes", "error"])
    for r in results:
        values = [r.metrics.get(name) for name in METRICS]
        costs = [r.train_seconds, r.images_per_second, r.model_size_mb, r.threads]
        settings = ";".join(f"{k}={v}" for k, v in r.settings.items())
        writer.writerow([r.model, r.category, r.status, *values, *costs, settings, r.notes, r.error])
    return buffer.getvalue()


def write_reports(results: Sequence[PairResult], folder: Path) -> list[Path]:
    """Write the CSV, the Markdown table and the charts; return the written paths."""
    from .plots import plot_metrics, plot_roc_curves  # noqa: PLC0415  (matplotlib)

    complete = all(r.status == "ok" for r in results)
    stem = "leaderboard" if complete else "leaderboard_INCOMPLETE"
    other = "leaderboard_INCOMPLETE" if complete else "leaderboard"
    for suffix in (".csv", ".md"):  # an earlier run's files of the other kind would contradict this one
        (folder / f"{other}{suffix}").unlink(missing_ok=True)
    categories = list(dict.fromkeys(r.category for r in results))
    means = mean_rows(results)
    status = (
        ""
        if complete
        else (
            f"**INCOMPLETE**: {sum(r.status != 'ok' for r in results)} of {len(results)} pairs failed; "
            "means cover finished categories only.\n\n"
        )
    )
    untrained = [m for m in MODELS.values() if m.backbone]
    notes = (
        "Measured with `anomalib-divass leaderboard` (anomalib Engine, MVTec datamodule, one Evaluator for "
        "every model; PRO is anomalib's AUPRO up to FPR 0.3). Times on a CPU, threads as in the column titles; "
        "training time includes one validation pass (thresholds), inference is pre-processing + forward pass "
        "per test image. '- ' means the model has no such output (GANomaly has no anomaly map). "
        f"{', '.join(m.name for m in untrained)} rows marked 'untrained backbone' ran without ImageNet weights "
        "(none can be downloaded here): they are not what those methods achieve with pre-trained backbones.\n\n"
    )
    mean_table = f"\n\n### Mean over categories\n\n{markdown_table(means)}" if len(categories) > 1 else ""
    markdown = (
        f"## Leaderboard\n\n{status}{notes}{markdown_table(results)}{mean_table}{_published_markdown(categories)}\n"
    )
    written = [folder / f"{stem}.csv", folder / f"{stem}.md"]
    write_atomic(written[0], _csv([*results, *means]))
    write_atomic(written[1], markdown)
    written += plot_metrics(results, means, folder / "charts")
    written += plot_roc_curves(results, folder / "charts")
    return written
