"""Unit tests of the checkpoint and export checks and the INT8_ACQ metric wrapper (``models.divide_assemble``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from anomalib.metrics import F1Score

from anomalib_divass.models.divide_assemble.checkpoint import (
    CheckpointNotFoundError,
    WrongCheckpointError,
    check_checkpoint_model,
    check_checkpoint_path,
)
from anomalib_divass.models.divide_assemble.export import ExportFolderError, ResettingMetric, check_export_root


def test_resetting_metric_scores_each_pass_on_its_own() -> None:
    metric = ResettingMetric(F1Score(fields=["pred_label", "gt_label"]))
    for label in (1, 0):  # anomalib's val_fn squeezes a batch of one image to 0-d predictions
        metric.update(SimpleNamespace(pred_label=torch.tensor(1), pred_score=torch.tensor(0.9), gt_label=torch.ones(1)))
        metric.update(
            SimpleNamespace(pred_label=torch.tensor(label), pred_score=torch.tensor(0.1), gt_label=torch.zeros(1))
        )
    first = metric.compute()
    metric.update(SimpleNamespace(pred_label=torch.tensor(1), pred_score=torch.tensor(0.9), gt_label=torch.ones(1)))
    metric.update(SimpleNamespace(pred_label=torch.tensor(0), pred_score=torch.tensor(0.1), gt_label=torch.zeros(1)))
    assert first == pytest.approx(0.8)  # 2 true positives, 1 false positive: 2 * 2 / (2 * 2 + 1)
    assert metric.compute() == pytest.approx(1.0)  # the first pass's false positive is forgotten


def test_export_root_is_created_and_checked(tmp_path: Path) -> None:
    assert check_export_root(tmp_path / "exports", "onnx") == tmp_path / "exports" / "weights" / "onnx"
    assert (tmp_path / "exports" / "weights" / "onnx").is_dir()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportFolderError, match=r"Cannot write the openvino export .*Pass --export_root"):
        check_export_root(blocker, "openvino")


def test_checkpoint_path_checks_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"it is a folder.*Pass --ckpt_path"):
        check_checkpoint_path(tmp_path)
    exported = tmp_path / "model.onnx"
    exported.write_bytes(b"")
    with pytest.raises(WrongCheckpointError, match=r"exported ONNX model, not a training checkpoint"):
        check_checkpoint_path(exported)
    checkpoint = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}}, checkpoint)
    assert check_checkpoint_path(checkpoint) == checkpoint.resolve()


def test_checkpoint_of_another_model_is_named() -> None:
    check_checkpoint_model({"state_dict": {"model.autoencoder.encoder.0.0.weight": torch.zeros(1)}})
    padim = {"state_dict": {"model.gaussian.mean": torch.zeros(1)}, "hyper_parameters": {"backbone": "resnet18"}}
    with pytest.raises(WrongCheckpointError, match=r"not a DivideAssemble checkpoint.*--model "):
        check_checkpoint_model(padim)
    with pytest.raises(WrongCheckpointError, match=r"Use it with the model that wrote it"):
        check_checkpoint_model({"state_dict": {"weight": torch.zeros(1)}})
