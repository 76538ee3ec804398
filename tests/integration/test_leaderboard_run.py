"""``anomalib-divass leaderboard`` end to end on the tiny dataset: files, resume, a crashing model."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import BIN, environment, run

from anomalib_divass.configs import config_path
from anomalib_divass.models.divide_assemble.lightning_model import DAAD_PLUS_LATENT_WEIGHT

pytestmark = pytest.mark.integration


def leaderboard(*args: str | Path, cwd: Path) -> tuple[int, str]:
    process = run([str(BIN / "anomalib-divass"), "leaderboard", *map(str, args)], cwd=cwd)
    return process.returncode, process.stdout + process.stderr


def test_leaderboard_writes_reports_and_resumes(tiny_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--root", tiny_root, "--categories", "washer", "--models", "DAAD+", "PaDiM", "--max-epochs", "1"]
    code, output = leaderboard(*args, "--output", out, cwd=tmp_path)
    assert code == 0, output
    assert "[1/3] DAAD on washer: elapsed" in output
    assert "DAAD on washer: epoch 1/1, elapsed" in output
    assert "[3/3] PaDiM on washer: elapsed 0:" in output
    assert "remaining ~" in output

    rows = {(r["model"], r["category"]): r for r in csv.DictReader((out / "leaderboard.csv").open())}
    assert set(rows) == {(m, c) for m in ("DAAD", "DAAD+", "PaDiM") for c in ("washer", "mean (1/1)")}
    for row in rows.values():
        assert row["status"] == "ok"
        for metric in ("image_AUROC", "pixel_AUROC", "image_F1Score", "pixel_F1Score", "pixel_AUPRO"):
            assert 0 <= float(row[metric]) <= 1, (row["model"], metric)
        assert float(row["images_per_second"]) > 0
        assert float(row["model_size_mb"]) > 0
    # DAAD+ is the DAAD network re-scored: same size, DAAD's training time, other scores.
    daad, plus = rows["DAAD", "washer"], rows["DAAD+", "washer"]
    assert plus["train_seconds"] == daad["train_seconds"]
    assert plus["model_size_mb"] == daad["model_size_mb"]
    assert f"latent_weight={DAAD_PLUS_LATENT_WEIGHT}" in plus["settings"]  # the model's DAAD+ weight
    assert "config=shipped" in plus["settings"]  # the config in the package
    assert "backbone_weights=untrained (random init)" in rows["PaDiM", "washer"]["settings"]

    markdown = (out / "leaderboard.md").read_text()
    assert "| PaDiM (untrained backbone) | washer |" in markdown
    assert "| DAAD (1 ep) | washer |" in markdown
    for chart in ("metrics.png", "cost.png", "roc_washer.png"):
        assert (out / "charts" / chart).read_bytes()[:4] == b"\x89PNG"
    # The ROC curve is the one anomalib's AUROC integrated.
    stored = json.loads((out / "pairs" / "washer" / "PaDiM.json").read_text())
    fpr, tpr = (np.asarray(v) for v in stored["roc"])
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(stored["metrics"]["image_AUROC"], abs=1e-6)

    pairs = sorted((out / "pairs").rglob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in [*pairs, out / "checkpoints" / "washer" / "DAAD.ckpt"]]
    code, output = leaderboard(*args, "--output", out, cwd=tmp_path)
    assert code == 0, output
    for model in ("DAAD", "DAAD+", "PaDiM"):
        assert f"resume: {model} on washer is finished, not retrained" in output
    assert "[1/" not in output
    assert [p.stat().st_mtime_ns for p in [*pairs, out / "checkpoints" / "washer" / "DAAD.ckpt"]] == stamps


def test_crashing_model_is_reported_and_the_rest_finish(tiny_root: Path, tmp_path: Path) -> None:
    config = yaml.safe_load(config_path().read_text())
    config["model"]["init_args"] = {"lr": float("nan")}  # the model refuses it when the pair builds it
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    code, output = leaderboard(
        "--root", tiny_root, "--categories", "washer", "--models", "AE", "PaDiM", "--max-epochs", "1",
        "--daad-config", bad, "--output", out, cwd=tmp_path,
    )  # fmt: skip
    assert code == 1, output
    assert "FAILED: AE on washer: ValueError: --model.lr must lie in (0.0, 1.0], got nan." in output
    assert "INCOMPLETE: 1 of 2 pairs failed (AE on washer)" in output
    assert not (out / "leaderboard.csv").exists()
    statuses = {r["model"]: r["status"] for r in csv.DictReader((out / "leaderboard_INCOMPLETE.csv").open())}
    assert statuses == {"AE": "failed", "PaDiM": "ok"}
    assert "**INCOMPLETE**" in (out / "leaderboard_INCOMPLETE.md").read_text()
    assert "Traceback" in (out / "logs" / "washer_AE.log").read_text()


def test_training_cut_off_mid_way_resumes_from_its_last_epoch(tiny_root: Path, tmp_path: Path) -> None:
    """A killed run keeps the last finished epoch; the same command trains only the epochs left."""
    out = tmp_path / "out"
    args = [str(BIN / "anomalib-divass"), "leaderboard", "--root", str(tiny_root), "--categories", "washer"]
    args += ["--models", "AE", "--max-epochs", "4", "--output", str(out)]
    process = subprocess.Popen(
        args, cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen = []
    for line in process.stdout:  # type: ignore[union-attr]
        seen.append(line)
        if "AE on washer: epoch 2/4" in line:
            process.kill()  # as a power cut would: no clean-up of any kind
            break
    process.wait(timeout=60)
    assert any("epoch 2/4" in line for line in seen), "".join(seen)
    checkpoint = out / "resume" / "washer" / "AE.ckpt"
    assert checkpoint.is_file()
    assert not (out / "pairs" / "washer" / "AE.json").exists()
    stored = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert stored["epoch"] in {1, 2}  # epoch 2 finished (0-based 1); epoch 3 may have been saved before the kill
    earlier_seconds = stored["callbacks"]["leaderboard_epoch_checkpoint"]["train_seconds"]
    assert earlier_seconds > 0

    code, output = leaderboard(*args[2:], cwd=tmp_path)
    assert code == 0, output
    assert "resuming AE on washer from its last finished epoch" in output
    assert "epoch 1/4" not in output
    assert "epoch 4/4" in output
    assert not checkpoint.exists()  # the pair is finished: its resume files are gone
    result = json.loads((out / "pairs" / "washer" / "AE.json").read_text())
    assert result["status"] == "ok"
    assert result["train_seconds"] > earlier_seconds  # the time before the interruption counts


def test_resume_checkpoint_of_other_settings_is_not_used(tiny_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = ["--root", tiny_root, "--categories", "washer", "--models", "AE", "--output", out]
    stem = out / "resume" / "washer" / "AE"
    stem.parent.mkdir(parents=True)
    stem.with_suffix(".ckpt").write_bytes(b"left by a 9-epoch run")
    stem.with_suffix(".json").write_text(json.dumps({"model": "AE", "settings": {"epochs": 9}}))
    code, output = leaderboard(*base, "--max-epochs", "1", cwd=tmp_path)
    assert code == 0, output
    assert "not resuming AE on washer from its last epoch: it was trained with other" in output
    assert "epoch 1/1" in output
