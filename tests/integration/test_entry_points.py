"""The two entry points, ``anomalib`` (through the ``.pth`` hook) and ``anomalib-divass``, in subprocesses.

Both prepare anomalib's command line the same way (``anomalib_divass.cli.prepare_anomalib_cli``), so the
same seeded training gives the same weights under either; ``anomalib predict`` of an exported model is
run by the plugin only for DivideAssemble's exports, and reaches anomalib untouched for another model's.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import anomalib, metrics_of, mvtec

pytestmark = pytest.mark.integration

SEED = 7
EXPORTED_LINE = "Exported-model predictions"  # what the plugin prints after running an exported model


def last_lines(process: subprocess.CompletedProcess, count: int = 30) -> str:
    return "\n".join((process.stdout + process.stderr).splitlines()[-count:])


@pytest.fixture(scope="module")
def trained(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, float]]]:
    """One seeded epoch of one batch under each command: command -> (checkpoint, test metrics)."""
    runs = {}
    for command in ("anomalib", "anomalib-divass"):
        workdir = tmp_path_factory.mktemp(command)
        process = anomalib(
            "train", "--model", "DivideAssemble", *mvtec(tiny_root), "--data.train_batch_size", "8",
            "--data.num_workers", "0", "--seed_everything", str(SEED), "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "1", "--trainer.enable_progress_bar", "false",
            cwd=workdir, command=command,
        )  # fmt: skip
        assert process.returncode == 0, last_lines(process)
        assert f"Seed set to {SEED}" in process.stdout + process.stderr
        checkpoint = workdir / "results" / "DivideAssemble" / "MVTecAD" / "washer" / "v0" / "weights" / "lightning"
        runs[command] = (checkpoint / "model.ckpt", metrics_of(process.stdout))
    return runs


def test_train_gives_the_same_weights_under_both_commands(trained: dict[str, tuple[Path, dict[str, float]]]) -> None:
    (first, first_metrics), (second, second_metrics) = trained["anomalib"], trained["anomalib-divass"]
    weights = [torch.load(path, map_location="cpu", weights_only=False)["state_dict"] for path in (first, second)]
    assert weights[0].keys() == weights[1].keys()
    assert any(key.startswith("model.autoencoder.") for key in weights[0])
    different = [key for key in weights[0] if not weights[0][key].equal(weights[1][key])]
    assert not different, different
    # One batch under both (--trainer.limit_train_batches 1 read as an int by both, see _anomalib_divass_hook),
    # then validation: the post-processor's thresholds and normalisation are set, and equal.
    assert int(weights[0]["model.autoencoder.encoder.0.1.num_batches_tracked"]) == 1
    assert torch.isfinite(weights[0]["post_processor._image_threshold"])
    assert first_metrics
    assert first_metrics == second_metrics  # and the same test scores
    # Without the seed the two runs would differ: the memory items and all weights start at random.


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


def test_divide_assemble_export_is_marked_and_run_by_the_plugin(images: Path, tmp_path: Path) -> None:
    from anomalib_divass import DivideAssemble
    from anomalib_divass.models.divide_assemble.export import EXPORT_MARKER, exported_by_divide_assemble

    model = DivideAssemble(channels=[4, 8], granularity=[2, 1], num_items=4).eval()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        exported = model.to_openvino(tmp_path / "export")
    text = exported.read_text()
    marker = f'<{EXPORT_MARKER[0]} value="{EXPORT_MARKER[1]}" />'
    assert text.count(marker) == 2  # set on the model, and copied from the ONNX file's metadata by OpenVINO
    assert exported_by_divide_assemble(exported)
    process = anomalib("predict", "--ckpt_path", str(exported), "--data", str(images), cwd=tmp_path)
    assert process.returncode == 0, last_lines(process)
    assert EXPORTED_LINE in process.stdout


def test_another_models_export_reaches_anomalib(images: Path, tmp_path: Path) -> None:
    import openvino as ov
    from openvino import opset13 as ops

    image = ops.parameter([1, 3, 64, 64], np.float32, name="input")
    exported = tmp_path / "padim" / "model.xml"
    exported.parent.mkdir()
    ov.save_model(ov.Model([ops.relu(image)], [image], "another_model"), exported)
    process = anomalib(
        "predict", "--model", "Padim", "--model.pre_trained", "false", "--ckpt_path", str(exported),
        "--data", str(images),
        cwd=tmp_path,
    )  # fmt: skip
    assert process.returncode != 0
    assert EXPORTED_LINE not in process.stdout  # the plugin did not run it
    assert "not a training checkpoint" not in process.stderr  # nor refused it with a DivideAssemble message
    assert "Unsupported operand 60" in process.stderr  # anomalib's own error: Lightning unpickles the .xml
