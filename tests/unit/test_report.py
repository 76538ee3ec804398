"""The HTML report: read from a results folder (labelled) or a predict-folder CSV (unlabelled), pictures, page."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalib_divass.models.divide_assemble.visualizer import PREDICTIONS_FIELDS, PREDICTIONS_FILE, RUN_FILE
from anomalib_divass.report import read_results, read_source, write_report
from anomalib_divass.report.command import main as report_main
from anomalib_divass.report.page import render_page
from anomalib_divass.report.pictures import THUMBNAIL_HEIGHT, picture_key
from anomalib_divass.report.roc import auroc, roc_curve
from anomalib_divass.report.sources import FOLDER_CSV_FIELDS

TILE = 32
# (defect type, index, score, predicted label, true label)
RESULTS = [
    ("good", 0, 0.10, 0, 0),
    ("good", 1, 0.30, 0, 0),
    ("good", 2, 0.62, 1, 0),
    ("crack", 0, 0.90, 1, 1),
    ("crack", 1, 0.45, 0, 1),
    ("stain", 0, 0.80, 1, 1),
]


def page_data(page: str) -> dict:
    """The rows the page carries (the JSON inside its script element)."""
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert match is not None
    return json.loads(match.group(1))


def make_results(folder: Path, *, with_reconstruction: bool = True, labels: bool = True) -> Path:
    """A results folder as DivideAssemble's visualizer writes it: panels, predictions.csv and run.json."""
    images = folder / "images"
    rng = np.random.default_rng(0)
    tiles = 5 if with_reconstruction else 4
    rows = []
    for defect, index, score, predicted, truth in RESULTS:
        panel = images / defect / f"{index:03d}.png"
        panel.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (TILE, TILE * tiles, 3), dtype=np.uint8)).save(panel)
        source = f"/data/washer/test/{defect}/{index:03d}.png"
        truth_text = truth if labels else ""
        panel_name = f"{defect}/{index:03d}.png"
        rows.append([source, panel_name, score, predicted, truth_text, defect, int(labels), int(with_reconstruction)])
    with (images / PREDICTIONS_FILE).open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(PREDICTIONS_FIELDS)
        writer.writerows(rows)
    run = {
        "model": "DivideAssemble",
        "variant": "DAAD",
        "stage": "test" if labels else "predict",
        "dataset": "MVTecAD",
        "category": "washer",
        "data_root": "/data",
        "threshold": {"score": 0.5, "raw": 0.0123, "normalized": True},
        "metrics": {"image_AUROC": 0.875, "pixel_AUROC": 0.93} if labels else {},
    }
    (images / RUN_FILE).write_text(json.dumps(run))
    return folder


def test_auroc_and_roc_curve_match_the_definition() -> None:
    scores, labels = [0.1, 0.4, 0.35, 0.8, 0.4], [0, 0, 1, 1, 1]
    positives = [s for s, label in zip(scores, labels, strict=True) if label]
    negatives = [s for s, label in zip(scores, labels, strict=True) if not label]
    wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives]
    expected = sum(wins) / len(wins)  # 4.5 / 6
    assert auroc(scores, labels) == pytest.approx(expected)
    assert auroc([0.2, 0.3], [1, 1]) is None
    fpr, tpr = roc_curve(scores, labels)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    area = sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(fpr, fpr[1:], tpr, tpr[1:], strict=False))
    assert area == pytest.approx(expected)


def test_labelled_run_report_has_summary_rows_and_pictures(tmp_path: Path) -> None:
    results = make_results(tmp_path / "run")
    source = read_results(results)
    assert [row.name for row in source.rows][:2] == ["test/good/000.png", "test/good/001.png"]
    page_path = write_report(source, tmp_path / "report")
    page = page_path.read_text()

    # Summary: model, data, threshold, counts, the run's metrics, the ROC curve and the defect types.
    assert "DivideAssemble (DAAD)" in page
    assert "MVTecAD / washer" in page
    assert "0.5 on the score below" in page
    assert "0.0123" in page
    assert "6: 3 predicted anomalous, 3 normal" in page
    assert "Image AUROC</th><td>0.875" in page
    assert "Pixel AUROC</th><td>0.930" in page
    assert '<svg class="roc"' in page
    assert "Image-level ROC of the scores below (AUROC 0.889)" in page  # 8 of 9 pairs ordered right
    assert "Reconstructions</th><td>6 of 6" in page
    assert " hidden>True label" not in page

    # Rows: one per image, with score, labels, type and its pictures beside the page.
    data = page_data(page)
    assert len(data["rows"]) == len(RESULTS)
    for row, (defect, _, score, predicted, truth) in zip(data["rows"], RESULTS, strict=True):
        assert (row["t"], row["s"], row["p"], row["g"], row["r"]) == (defect, score, predicted, truth, True)
        thumbnail, large = page_path.parent / row["th"], page_path.parent / row["lg"]
        with Image.open(thumbnail) as small, Image.open(large) as big:
            assert small.height == THUMBNAIL_HEIGHT
            assert big.size == (5 * TILE, TILE)  # the whole panel: image, reconstruction, masks, map
    # Self-contained: nothing is loaded from elsewhere.
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "http://" not in page
    assert "https://" not in page
    assert "@@" not in page


def test_unlabelled_anomalib_predict_run(tmp_path: Path) -> None:
    source = read_results(make_results(tmp_path / "run", with_reconstruction=False, labels=False))
    assert all(row.gt_label is None for row in source.rows)
    assert any("no reconstruction" in note for note in source.summary.notes)
    page = write_report(source, tmp_path / "report").read_text()
    assert " hidden>True label" in page  # no true-label filter without labels
    assert '<svg class="roc"' not in page
    assert "AUROC" not in page


def test_predict_folder_report_composes_image_and_mask(tmp_path: Path) -> None:
    data = tmp_path / "images"
    masks = tmp_path / "masks"
    for name in ("line1/a.png", "line1/b.png", "line2/c.png"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 20), "gray").save(data / name)
    (masks / "line1").mkdir(parents=True)
    mask = np.zeros((20, 40), np.uint8)
    mask[5:15, 10:20] = 255
    Image.fromarray(mask).save(masks / "line1" / "a.png")
    (data / "bad.png").write_bytes(b"not an image")
    output = tmp_path / "predictions.csv"
    with output.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(FOLDER_CSV_FIELDS)
        writer.writerow([data / "line1/a.png", "0.9", 1, "0.1", ""])
        writer.writerow([data / "line1/b.png", "0.2", 0, "0.0", ""])
        writer.writerow([data / "line2/c.png", "0.4", 0, "0.0", ""])
        writer.writerow([data / "bad.png", "", "", "", "cannot identify image file"])
    source = read_source(output, masks=masks, data=data)
    assert source.summary.kind == "predict-folder"
    assert [row.defect_type for row in source.rows] == ["line1", "line1", "line2", ""]
    assert source.rows[0].mask == masks / "line1" / "a.png"
    assert source.rows[1].mask is None
    page_path = write_report(source, tmp_path / "report")
    rows = page_data(page_path.read_text())["rows"]
    with Image.open(page_path.parent / rows[0]["lg"]) as large:
        assert large.size == (3 * 512, 256)  # image, image + mask outline, mask at 256 px height
        # The mask (columns 10-20 of 40, at 256 / 20 = 12.8 px per pixel) outlined in red on the second tile.
        edge = [large.getpixel((512 + 128 + dx, 128)) for dx in range(-2, 3)]
        assert any(red > 200 and green < 80 for red, green, _ in edge), edge
    with Image.open(page_path.parent / rows[1]["lg"]) as large:
        assert large.size == (512, 256)  # no mask: the image only
    assert rows[3]["th"] is None
    assert rows[3]["e"] == "cannot identify image file"
    assert rows[3]["s"] is None


def test_second_report_reuses_pictures(tmp_path: Path) -> None:
    source = read_results(make_results(tmp_path / "run"))
    page = write_report(source, tmp_path / "report")
    thumbnail = page.parent / page_data(page.read_text())["rows"][0]["th"]
    before = thumbnail.stat().st_mtime_ns
    write_report(source, tmp_path / "report")
    assert thumbnail.stat().st_mtime_ns == before


def test_names_cannot_break_the_page(tmp_path: Path) -> None:
    source = read_results(make_results(tmp_path / "run"))
    source.rows[0].name = "</script><script>alert(1)</script>.png"
    source.rows[0].defect_type = '<b>"x"</b>'
    page = render_page(source, [None] * len(source.rows))
    assert page.count("</script>") == 2  # the data's and the code's
    assert page_data(page)["rows"][0]["n"] == source.rows[0].name
    assert '<option value="&lt;b&gt;&quot;x&quot;&lt;/b&gt;">' in page


def test_picture_keys_are_safe_and_unique() -> None:
    taken: set[str] = set()
    assert picture_key("test/a b/0.png", taken) == "test/a_b/0"
    assert picture_key("test/a b/0.jpg", taken) == "test/a_b/0_2"
    assert picture_key("../../etc/passwd", taken) == "etc/passwd"
    assert picture_key("a/../b.png", taken) == "a/_/b"


def test_command_finds_the_newest_run_below_a_folder_and_names_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_results(tmp_path / "results" / "v0")
    assert report_main([str(tmp_path / "results")]) == 0
    assert (tmp_path / "results" / "v0" / "report" / "index.html").is_file()
    assert "Report of 6 images" in capsys.readouterr().out

    (tmp_path / "empty").mkdir()
    assert report_main([str(tmp_path / "empty")]) == 2
    assert "predictions.csv" in capsys.readouterr().err


def test_predict_folder_report_option_writes_masks_and_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from anomalib_divass.inference import command
    from anomalib_divass.inference.folder import FolderSummary

    data = tmp_path / "images"
    data.mkdir()
    Image.new("RGB", (16, 16), "gray").save(data / "a.png")
    seen = {}

    def fake_score_folder(model: str, folder: str, output: str, masks: str | None, *args: object, **kwargs: object):
        seen["masks"] = masks
        Path(masks, "a.png").parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16), 255).save(Path(masks, "a.png"))
        with Path(output).open("w", newline="") as file:
            csv.writer(file).writerows([FOLDER_CSV_FIELDS, [data / "a.png", "0.8", 1, "1.0", ""]])
        return FolderSummary(1, 1, [], 0, Path(output))

    monkeypatch.setattr(command, "score_folder", fake_score_folder)
    report = tmp_path / "report"
    output = tmp_path / "predictions.csv"
    status = command.main(["--model", "m.xml", "--data", str(data), "--output", str(output), "--report", str(report)])
    assert status == 0
    assert Path(seen["masks"]) == report / "masks"  # masks go into the report unless --masks is given
    assert f"Report: {(report / 'index.html').resolve()}" in capsys.readouterr().out
    rows = page_data((report / "index.html").read_text())["rows"]
    assert [(row["n"], row["s"], row["p"], row["g"]) for row in rows] == [("a.png", 0.8, 1, None)]
    assert (report / rows[0]["lg"]).is_file()
