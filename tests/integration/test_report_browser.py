"""A tiny real run: the reconstruction in anomalib's panels, the report of it, checked in headless Chromium.

One small DivideAssemble is trained for one epoch in process and tested (labelled MVTec-layout data) and
predicted on a folder (no labels); the panels, the list the visualizer writes, the reports and the pages as
Chromium renders them (DOM after the page's script ran, and a screenshot) are checked.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalib_divass import DivideAssemble, MVTec
from anomalib_divass.report import read_results, write_report

pytestmark = pytest.mark.integration

SIZE = 64
CHROMIUM = next((path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None)


@dataclass
class Run:
    test: Path  # the test run's images folder (labelled)
    untouched: Path  # the same test with --model.visualize_reconstruction false
    predict: Path  # anomalib predict on a folder (no labels)
    model: DivideAssemble


def _engine(root: Path) -> object:
    from anomalib.engine import Engine

    return Engine(max_epochs=1, logger=False, default_root_dir=root, enable_progress_bar=False)


def _model(**kwargs: object) -> DivideAssemble:
    pre_processor = DivideAssemble.configure_pre_processor((SIZE, SIZE))
    return DivideAssemble(channels=[8, 16], granularity=[2, 1], num_items=8, pre_processor=pre_processor, **kwargs)


def _images_folder(results: Path) -> Path:
    (found,) = {path.parent.resolve() for path in results.rglob("predictions.csv")}
    return found


@pytest.fixture(scope="module")
def run(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    import torch

    torch.manual_seed(0)
    work = tmp_path_factory.mktemp("report_run")
    datamodule = MVTec(root=tiny_root, category="washer", train_batch_size=8, eval_batch_size=8, num_workers=0)
    model = _model()
    engine = _engine(work / "test")
    engine.fit(model, datamodule=datamodule)
    engine.test(model, datamodule=datamodule)

    plain = _model(visualize_reconstruction=False)
    plain.load_state_dict(model.state_dict())
    _engine(work / "plain").test(plain, datamodule=datamodule)

    folder = work / "incoming"
    folder.mkdir()
    test_images = tiny_root / "washer" / "test"
    for name in ("paint/000.png", "paint/001.png", "good/000.png"):
        source = test_images / name
        shutil.copy(source, folder / f"{source.parent.name}_{source.name}")
    _engine(work / "predict").predict(model, data_path=folder)
    return Run(_images_folder(work / "test"), _images_folder(work / "plain"), _images_folder(work / "predict"), model)


def _rows(images: Path) -> list[dict[str, str]]:
    with (images / "predictions.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def _tiles(panel: Path) -> int:
    with Image.open(panel) as picture:
        assert picture.height == 256
        return picture.width // 256


# --- the panel -----------------------------------------------------------------------------------------


def test_test_panels_show_the_reconstruction_after_the_image(run: Run) -> None:
    rows = _rows(run.test)
    assert len(rows) == 16  # 8 normal, 8 painted test images
    assert {row["gt_label"] for row in rows} == {"0", "1"}
    assert all(row["reconstruction"] == "1" and row["gt_mask"] == "1" for row in rows)
    for row in rows:
        # image, reconstruction, ground truth, map overlay, predicted-mask overlay
        assert _tiles(run.test / row["panel"]) == 5
    # The second tile is the network's reconstruction of that image (below the tile's title).
    import torch
    from torchvision.transforms.v2.functional import resize, to_pil_image

    row = rows[-1]
    with Image.open(row["image_path"]) as source:
        image = torch.from_numpy(np.asarray(source.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    with torch.no_grad():
        rebuilt = run.model.model.eval().autoencoder(resize(image, [SIZE, SIZE], antialias=True)[None]).image[0]
    expected = np.asarray(to_pil_image(rebuilt.clamp(0, 1)).resize((256, 256)), dtype=float)
    with Image.open(run.test / row["panel"]) as panel:
        tile = np.asarray(panel.convert("RGB"), dtype=float)[:, 256:512]
    assert np.abs(tile[60:] - expected[60:]).mean() < 3
    pngs = sorted(path for path in run.test.rglob("*.png"))
    assert len(pngs) == 16  # nothing else among anomalib's pictures


def test_switched_off_gives_anomalibs_panels(run: Run) -> None:
    rows = _rows(run.untouched)
    assert len(rows) == 16
    assert all(row["reconstruction"] == "0" for row in rows)
    assert all(_tiles(run.untouched / row["panel"]) == 4 for row in rows)


def test_predict_panels_have_the_reconstruction_and_no_labels(run: Run) -> None:
    rows = _rows(run.predict)
    assert len(rows) == 3
    assert all(row["gt_label"] == "" and row["reconstruction"] == "1" for row in rows)
    assert all(_tiles(run.predict / row["panel"]) == 4 for row in rows)  # no ground truth: 4 tiles


# --- the reports ---------------------------------------------------------------------------------------


def test_labelled_report_has_the_runs_metrics(run: Run, tmp_path: Path) -> None:
    page = write_report(read_results(run.test.parent), tmp_path / "report").read_text()
    assert "Image AUROC</th><td>" in page
    assert "Pixel AUROC</th><td>" in page
    assert '<svg class="roc"' in page
    assert "MVTecAD / washer" in page
    assert "Reconstructions</th><td>16 of 16" in page


def test_unlabelled_report(run: Run, tmp_path: Path) -> None:
    page = write_report(read_results(run.predict.parent), tmp_path / "report").read_text()
    assert "AUROC" not in page
    assert "Reconstructions</th><td>3 of 3" in page


# --- in a real browser ---------------------------------------------------------------------------------


class _Dom(HTMLParser):
    """The rows (``tr.row`` attributes and their thumbnail's attributes) of a dumped report page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str | None]] = []
        self.images: list[dict[str, str | None]] = []
        self.body: dict[str, str | None] = {}
        self.labels: dict[str, bool] = {}
        self._label: bool | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "body":
            self.body = values
        if tag == "tr" and "row" in (values.get("class") or "").split():
            self.rows.append(values)
            self.images.append({})
        if tag == "img" and values.get("class") == "thumb" and self.rows:
            self.images[-1] = values
        if tag == "label":
            self._label = "hidden" not in values
        if tag == "select" and self._label is not None:
            self.labels[values.get("id") or ""] = self._label


def _browser(url: str, profile: Path, *flags: str) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's package)")
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *flags,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _rendered(page: Path, profile: Path, view: str = "") -> _Dom:
    process = _browser(page.resolve().as_uri() + (f"#{view}" if view else ""), profile, "--dump-dom")
    assert process.returncode == 0, process.stderr[-2000:]
    dom = _Dom()
    dom.feed(process.stdout)
    assert dom.body.get("data-ready") == "1", process.stdout[:2000]  # the page's script ran
    return dom


@pytest.fixture(scope="module")
def report(run: Run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(read_results(run.test.parent), tmp_path_factory.mktemp("browser") / "report")


def test_browser_shows_every_row_sorted_by_score_with_its_pictures(run: Run, report: Path, tmp_path: Path) -> None:
    dom = _rendered(report, tmp_path / "profile")
    assert len(dom.rows) == 16
    assert dom.body.get("data-shown") == "16"
    scores = [row["data-score"] for row in dom.rows]
    expected = sorted((float(row["pred_score"]) for row in _rows(run.test)), reverse=True)
    assert scores == [f"{score:.4f}" for score in expected]
    assert {row["data-truth"] for row in dom.rows} == {"anomalous", "normal"}
    for image in dom.images:
        assert image.get("src", "").startswith("images/thumbs/")
        assert (report.parent / str(image["src"])).is_file()
        assert image.get("loading") == "lazy"
    assert all(image.get("data-loaded") == "1" for image in dom.images[:3])  # the browser decoded them


def test_browser_filters_by_predicted_label_type_and_truth(run: Run, report: Path, tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    anomalous = _rendered(report, profile, "label=anomalous")
    normal = _rendered(report, profile, "label=normal")
    assert {row["data-label"] for row in anomalous.rows} <= {"anomalous"}
    assert {row["data-label"] for row in normal.rows} <= {"normal"}
    assert len(anomalous.rows) + len(normal.rows) == 16
    assert anomalous.body.get("data-shown") == str(len(anomalous.rows))

    paint = _rendered(report, profile, "type=paint")
    assert len(paint.rows) == 8
    assert {row["data-type"] for row in paint.rows} == {"paint"}

    page = _rendered(report, profile, "truth=normal&sort=score-asc&size=3&page=2")
    normal_scores = sorted(float(row["pred_score"]) for row in _rows(run.test) if row["gt_label"] == "0")
    assert [row["data-score"] for row in page.rows] == [f"{score:.4f}" for score in normal_scores[3:6]]
    assert {row["data-truth"] for row in page.rows} == {"normal"}
    assert page.labels == {"f-label": True, "f-type": True, "f-truth": True, "f-sort": True}


def test_browser_click_shows_the_large_picture(report: Path, tmp_path: Path) -> None:
    # The same page with one line added at the end that clicks the first thumbnail, as a person would.
    clicked = report.with_name("clicked.html")
    script = "<script>document.querySelector('img.thumb').click()</script>"
    clicked.write_text(report.read_text().replace("</body>", script + "</body>"))
    process = _browser(clicked.resolve().as_uri(), tmp_path / "profile", "--dump-dom")
    assert process.returncode == 0, process.stderr[-2000:]
    lightbox = re.search(r'<div id="lightbox"([^>]*)>.*?<img id="lightbox-image"([^>]*)>', process.stdout, re.S)
    assert lightbox is not None
    assert "hidden" not in lightbox.group(1)
    source = re.search(r'src="([^"]+)"', lightbox.group(2))
    assert source is not None
    assert source.group(1).startswith("images/large/")
    with Image.open(report.parent / source.group(1)) as large:
        assert large.size == (5 * 256, 256)  # the whole panel, reconstruction included


def test_browser_unlabelled_page_has_no_truth_filter(run: Run, tmp_path: Path) -> None:
    page = write_report(read_results(run.predict.parent), tmp_path / "report")
    dom = _rendered(page, tmp_path / "profile")
    assert len(dom.rows) == 3
    assert {row["data-truth"] for row in dom.rows} == {"unknown"}
    assert dom.labels["f-truth"] is False


def test_browser_screenshot_shows_the_page(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    url = report.resolve().as_uri()
    process = _browser(url, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,900")
    assert process.returncode == 0, process.stderr[-2000:]
    with Image.open(shot) as picture:
        array = np.asarray(picture.convert("RGB"), dtype=float)
    assert array.shape[1] == 1200
    assert array.std() > 20  # header, summary, rows and thumbnails, not a blank page
    assert (array[:60].mean(axis=2) < 80).mean() > 0.5  # the dark header band


# The README's demo and its report: tests/integration/test_cli.py::test_demo_command_prints_auroc_and_where_results_are
