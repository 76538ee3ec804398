"""Streaming a folder through an exported model: order, corrupt files, a CSV written as it goes, resume.

One small DivideAssemble (64 px, two scales) is trained for an epoch on the tiny dataset and exported
to OpenVINO once for the module; every test streams a folder of its images through it.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalib_divass.inference import (
    Failure,
    OpenVINOModel,
    Prediction,
    score_folder,
    stream_predictions,
    throughput_model,
)
from anomalib_divass.inference.command import main
from anomalib_divass.inference.writer import CSV_FIELDS

pytestmark = pytest.mark.integration

ONE_THREAD = {"INFERENCE_NUM_THREADS": 1}


@pytest.fixture(scope="module")
def exported(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from anomalib.deploy import ExportType
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    from anomalib_divass import DivideAssemble, MVTec

    seed_everything(0)
    model = DivideAssemble(
        channels=[8, 16],
        granularity=[2, 1],
        num_items=10,
        pre_processor=DivideAssemble.configure_pre_processor((64, 64)),
        visualizer=False,
    )
    datamodule = MVTec(root=tiny_root, category="washer", train_batch_size=16, eval_batch_size=16, num_workers=0)
    folder = tmp_path_factory.mktemp("stream_model")
    engine = Engine(max_epochs=1, logger=False, enable_progress_bar=False, default_root_dir=folder)
    engine.fit(model, datamodule=datamodule)
    path = engine.export(model, ExportType.OPENVINO, export_root=folder)
    assert path is not None
    return Path(path)


@pytest.fixture(scope="module")
def model(exported: Path) -> OpenVINOModel:
    return throughput_model(exported, precision="f32", config=ONE_THREAD)


@pytest.fixture
def folder(tiny_root: Path, tmp_path: Path) -> Path:
    """16 test images (8 normal, 8 painted; two sizes) in two subfolders, a truncated PNG and a text file."""
    images = tmp_path / "images"
    for kind in ("good", "paint"):
        (images / kind).mkdir(parents=True)
        for path in sorted((tiny_root / "washer" / "test" / kind).glob("*.png")):
            shutil.copy(path, images / kind / path.name)
    with Image.open(images / "good" / "001.png") as picture:  # another size: resized like training
        picture.resize((96, 80)).save(images / "good" / "001.png")
    (images / "good" / "005_truncated.png").write_bytes((images / "good" / "005.png").read_bytes()[:300])
    (images / "paint" / "notes.png").write_text("not an image")
    return images


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_stream_matches_one_by_one_in_file_order_and_skips_corrupt_files(
    model: OpenVINOModel, exported: Path, folder: Path, tmp_path: Path
) -> None:
    output = tmp_path / "scores.csv"
    summary = score_folder(model, folder, output, masks=tmp_path / "masks", workers=2)

    files = sorted(p for p in folder.rglob("*.png"))
    assert summary.scored == 16
    assert sorted(failure.image.name for failure in summary.failed) == ["005_truncated.png", "notes.png"]
    rows = rows_of(output)
    assert list(rows[0]) == list(CSV_FIELDS)
    assert [row["image"] for row in rows] == [str(p) for p in files]  # every file once, in file order
    reference = OpenVINOModel(exported, precision="f32", config=ONE_THREAD)  # synchronous, one at a time
    for row in rows:
        if Path(row["image"]).name in {"005_truncated.png", "notes.png"}:
            assert f"Cannot read image file '{row['image']}'" in row["error"]
            assert row["pred_score"] == ""
            continue
        expected = reference.predict(row["image"])
        assert abs(float(row["pred_score"]) - float(expected.pred_score.reshape(-1)[0])) < 1e-5, row
        assert int(row["pred_label"]) == int(expected.pred_label.reshape(-1)[0])
        assert row["error"] == ""
    with Image.open(tmp_path / "masks" / "good" / "001.png") as mask:
        assert mask.size == (96, 80)  # masks come back at the image's size
    assert not (tmp_path / "masks" / "paint" / "notes.png").exists()
    # Painted washers score above normal ones (the stream carries the real scores).
    scores = {Path(row["image"]).parent.name: [] for row in rows}
    for row in rows:
        if row["pred_score"]:
            scores[Path(row["image"]).parent.name].append(float(row["pred_score"]))
    assert np.mean(scores["paint"]) > np.mean(scores["good"])


def test_each_row_is_in_the_file_before_the_next_image_is_reported(
    model: OpenVINOModel, folder: Path, tmp_path: Path
) -> None:
    output = tmp_path / "scores.csv"
    seen: list[int] = []

    def check(result: Prediction | Failure) -> None:
        seen.append(len(rows_of(output)))  # rows on disk when the result is reported

    score_folder(model, folder, output, workers=2, on_result=check)
    assert seen == list(range(1, 19))


def test_interrupted_run_keeps_its_rows_and_resume_scores_only_the_rest(
    model: OpenVINOModel, folder: Path, tmp_path: Path
) -> None:
    output = tmp_path / "scores.csv"

    def stop_after_five(result: Prediction | Failure) -> None:
        stop_after_five.count += 1
        if stop_after_five.count == 5:
            raise KeyboardInterrupt

    stop_after_five.count = 0
    with pytest.raises(KeyboardInterrupt):
        score_folder(model, folder, output, workers=2, on_result=stop_after_five)
    kept = [row["image"] for row in rows_of(output)]
    assert len(kept) == 5

    with pytest.raises(FileExistsError, match=r"already exists. Pass --resume"):
        score_folder(model, folder, output)
    with output.open("a") as file:  # a row torn by a kill in the middle of a write
        file.write(str(sorted(folder.rglob("*.png"))[5]) + ",0.12")

    rescored: list[str] = []
    summary = score_folder(
        model, folder, output, workers=2, resume=True, on_result=lambda r: rescored.append(str(r.image))
    )
    rows = [row["image"] for row in rows_of(output)]
    assert summary.resumed == 5
    assert not set(rescored) & set(kept)  # nothing scored twice
    assert sorted(rows) == sorted(str(p) for p in folder.rglob("*.png"))  # every image exactly once
    assert all(row["error"] or row["pred_score"] for row in rows_of(output))  # the torn row is gone


def test_a_run_stopped_before_its_first_image_can_simply_be_rerun(
    model: OpenVINOModel, folder: Path, tmp_path: Path
) -> None:
    output = tmp_path / "scores.csv"
    output.write_text(",".join(CSV_FIELDS) + "\n")  # e.g. a configuration error on the first image
    assert score_folder(model, folder, output).scored == 16
    other = tmp_path / "notes.csv"
    other.write_text("my own notes\n")
    with pytest.raises(FileExistsError):  # anything else is never replaced
        score_folder(model, folder, other)
    assert other.read_text() == "my own notes\n"


def test_resume_refuses_a_file_that_is_not_a_prediction_csv(model: OpenVINOModel, folder: Path, tmp_path: Path) -> None:
    output = tmp_path / "other.csv"
    output.write_text("name,value\na,1\n")
    with pytest.raises(ValueError, match=r"not a prediction CSV of this command"):
        score_folder(model, folder, output, resume=True)
    assert output.read_text() == "name,value\na,1\n"  # left untouched


def test_stream_reads_lazily_and_stops_cleanly(model: OpenVINOModel, folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*.png"))
    taken: list[Path] = []

    def lazily() -> object:
        for path in files:
            taken.append(path)
            yield path

    stream = stream_predictions(model, lazily(), workers=1)
    first = next(stream)
    assert first.image == files[0]
    stream.close()  # e.g. an interruption: no reader or request is left behind
    assert len(taken) < len(files)  # it did not read the whole folder ahead


def test_command_reports_unreadable_files_and_exits_1(
    exported: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "scores.csv"
    status = main(
        ["--model", str(exported), "--data", str(folder), "--output", str(output), "--threads", "1", "--quiet"]
    )
    captured = capsys.readouterr()
    assert status == 1
    assert "skipped: Cannot read image file" in captured.err
    assert "notes.png" in captured.err
    assert "16 images" in captured.out
    assert "2 unreadable skipped" in captured.out
    # --resume tries the unreadable files again: still unreadable, so still status 1, one row each.
    assert main(["--model", str(exported), "--data", str(folder), "--output", str(output), "--resume"]) == 1
    out = capsys.readouterr().out
    assert "0 images" in out
    assert "16 already in the CSV were skipped, 2 unreadable before were tried again" in out
    assert len(rows_of(output)) == 18


def test_resume_retries_images_that_failed_before(model: OpenVINOModel, folder: Path, tmp_path: Path) -> None:
    output = tmp_path / "scores.csv"
    first = score_folder(model, folder, output, workers=2)
    assert sorted(failure.image.name for failure in first.failed) == ["005_truncated.png", "notes.png"]
    shutil.copy(folder / "good" / "005.png", folder / "good" / "005_truncated.png")  # the user replaces the file

    summary = score_folder(model, folder, output, workers=2, resume=True)
    assert (summary.scored, summary.resumed, summary.retried) == (1, 16, 2)
    assert [failure.image.name for failure in summary.failed] == ["notes.png"]
    rows = rows_of(output)
    assert sorted(row["image"] for row in rows) == sorted(str(p) for p in folder.rglob("*.png"))  # one row each
    (replaced,) = [row for row in rows if row["image"].endswith("005_truncated.png")]
    assert replaced["error"] == ""  # the stale error row is gone, the new score is there
    (original,) = [row for row in rows if row["image"].endswith("good/005.png")]
    assert float(replaced["pred_score"]) == pytest.approx(float(original["pred_score"]), abs=1e-5)
    (notes,) = [row for row in rows if row["image"].endswith("notes.png")]
    assert "Cannot read image file" in notes["error"]
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".tmp")]
