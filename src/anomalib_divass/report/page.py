"""The report page: one self-contained HTML file (style, script and rows inline) beside its ``images/`` folder.

The summary (model, data, threshold, counts, AUROC and the ROC curve where labels exist, one line per defect
type) is written as HTML; the rows travel as JSON inside the page and a small script shows them a page at a
time (100 rows by default), sorted by score and filtered by predicted label, defect type and true label. The
view is kept in the address's hash (``index.html#label=anomalous&type=crack``). Thumbnails load lazily; a
click shows the large picture. Nothing is fetched from a server or the internet: the page opens from disk.

Example:
    >>> from pathlib import Path
    >>> from anomalib_divass.report.sources import ReportRow, ReportSource, RunSummary
    >>> source = ReportSource(RunSummary(Path("run"), "anomalib"), [ReportRow("a.png", None, 0.7, 1, 1)])
    >>> "<html" in render_page(source, [None])
    True

"""

from __future__ import annotations

import html
import json
import time
from collections import Counter
from collections.abc import Sequence
from importlib import resources

from .pictures import Pictures
from .roc import auroc, roc_svg
from .sources import ReportRow, ReportSource, RunSummary

__all__ = ["DEFAULT_PAGE_SIZE", "METRIC_TITLES", "render_page"]

DEFAULT_PAGE_SIZE = 100
METRIC_TITLES = {
    "image_AUROC": "Image AUROC",
    "pixel_AUROC": "Pixel AUROC",
    "image_F1Score": "Image F1",
    "pixel_F1Score": "Pixel F1",
    "pixel_AUPRO": "Pixel PRO",
}


def render_page(
    source: ReportSource,
    pictures: Sequence[Pictures | None],
    title: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> str:
    """The HTML of the report page.

    Args:
        source: Rows and summary.
        pictures: The pictures of each row (paths relative to the page), ``None`` for none.
        title: Page title (default: model, data and category).
        page_size: Rows per page.

    Returns:
        The page.

    """
    summary, rows = source.summary, source.rows
    title = title or default_title(summary)
    types = sorted({row.defect_type for row in rows})
    type_options = '<option value="all">all</option>' + "".join(
        f'<option value="{html.escape(name)}">{html.escape(name or "(none)")}</option>' for name in types
    )
    has_truth = any(row.gt_label is not None for row in rows)
    records = [_record(index, row, picture) for index, (row, picture) in enumerate(zip(rows, pictures, strict=True))]
    data = {"pageSize": max(1, int(page_size)), "rows": records}
    replacements = {
        "@@TITLE@@": html.escape(title),
        "@@SUBTITLE@@": html.escape(_subtitle(summary, rows)),
        "@@SUMMARY@@": _summary_html(summary, rows),
        "@@TYPE_OPTIONS@@": type_options,
        "@@TRUTH_HIDDEN@@": "" if has_truth else " hidden",
        "@@FOOTER@@": html.escape(
            f"Written by anomalib-divass report on {time.strftime('%Y-%m-%d %H:%M')} from {summary.source}."
        ),
        "@@CSS@@": _asset("report.css"),
        "@@SCRIPT@@": _asset("report.js"),
        "@@DATA@@": _script_json(data),
    }
    page = _asset("page.html")
    for marker, value in replacements.items():
        page = page.replace(marker, value)
    return page


def default_title(summary: RunSummary) -> str:
    """``DivideAssemble report: MVTecAD / bottle`` (or the scored folder)."""
    data = " / ".join(part for part in (summary.dataset, summary.category) if part)
    return f"{summary.model} report" + (f": {data}" if data else "")


def _subtitle(summary: RunSummary, rows: Sequence[ReportRow]) -> str:
    stage = {"test": "anomalib test", "predict": "anomalib predict"}.get(summary.stage, summary.stage or "run")
    return f"{len(rows)} images, {stage}, {summary.source}"


def _record(index: int, row: ReportRow, picture: Pictures | None) -> dict[str, object]:
    return {
        "i": index,
        "n": row.name,
        "s": None if row.score is None else round(row.score, 6),
        "p": row.pred_label,
        "g": row.gt_label,
        "t": row.defect_type,
        "th": picture.thumbnail if picture else None,
        "lg": picture.large if picture else None,
        "r": row.reconstruction,
        "e": row.error,
    }


def _script_json(data: object) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>`` or ``<!--`` can end it)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def _summary_html(summary: RunSummary, rows: Sequence[ReportRow]) -> str:
    scored = [row for row in rows if row.score is not None]
    predicted = Counter(row.pred_label for row in scored)
    labelled = [row for row in scored if row.gt_label is not None]
    truth = Counter(row.gt_label for row in labelled)
    facts: list[tuple[str, str]] = []
    model = summary.model + (f" ({summary.variant})" if summary.variant else "")
    facts.append(("Model", html.escape(model)))
    data = " / ".join(part for part in (summary.dataset, summary.category) if part)
    if data:
        facts.append(("Data", html.escape(data)))
    facts.append(("Run", html.escape(f"{summary.stage or summary.kind}: {summary.source}")))
    if summary.threshold is not None:
        threshold = f"{summary.threshold:g} on the score below"
        if summary.raw_threshold is not None:
            threshold += f" (normalised; {summary.raw_threshold:.4g} on the model's raw score)"
        facts.append(("Threshold", html.escape(threshold)))
    counts = f"{len(rows)}: {predicted[1]} predicted anomalous, {predicted[0]} normal"
    if len(scored) < len(rows):
        counts += f", {len(rows) - len(scored)} unscored"
    facts.append(("Images", html.escape(counts)))
    reconstructions = sum(row.reconstruction for row in rows)
    if summary.kind == "anomalib":
        facts.append(("Reconstructions", f"{reconstructions} of {len(rows)} pictures"))
    if labelled:
        facts.append(("True labels", f"{truth[1]} anomalous, {truth[0]} normal"))
        wrong = sum(row.gt_label != row.pred_label for row in labelled)
        facts.append(("Misclassified", f"{wrong} of {len(labelled)}"))
    metrics = dict(summary.metrics)
    computed = auroc([row.score for row in labelled], [row.gt_label for row in labelled]) if labelled else None
    if "image_AUROC" not in metrics and computed is not None:
        metrics["image_AUROC"] = computed
    for name, value in sorted(metrics.items(), key=lambda item: (item[0] not in METRIC_TITLES, item[0])):
        facts.append((METRIC_TITLES.get(name, name), f"{value:.3f}"))
    parts = ['<div class="summary-grid">', '<table class="facts">']
    parts += [f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in facts]
    parts.append("</table>")
    if computed is not None:
        parts.append(
            "<figure>"
            + roc_svg([row.score for row in labelled], [row.gt_label for row in labelled])
            + f"<figcaption>Image-level ROC of the scores below (AUROC {computed:.3f})</figcaption></figure>"
        )
    parts.append(_types_table(scored))
    parts.append("</div>")
    if summary.notes:
        notes = "".join(f"<li>{html.escape(note)}</li>" for note in summary.notes)
        parts.append(f'<ul class="notes">{notes}</ul>')
    return "\n".join(parts)


def _types_table(rows: Sequence[ReportRow]) -> str:
    groups: dict[str, list[ReportRow]] = {}
    for row in rows:
        groups.setdefault(row.defect_type, []).append(row)
    if len(groups) <= 1 and "" in groups:
        return ""
    lines = [
        '<table class="types"><thead><tr><th>Defect type</th><th>Images</th><th>Predicted anomalous</th>'
        "<th>Mean score</th></tr></thead><tbody>"
    ]
    for name in sorted(groups):
        group = groups[name]
        anomalous = sum(row.pred_label == 1 for row in group)
        mean = sum(row.score or 0.0 for row in group) / len(group)
        lines.append(
            f"<tr><td>{html.escape(name or '(none)')}</td><td>{len(group)}</td><td>{anomalous}</td>"
            f"<td>{mean:.3f}</td></tr>"
        )
    lines.append("</tbody></table>")
    return "".join(lines)
