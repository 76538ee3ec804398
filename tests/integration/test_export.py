"""Deployment of DivideAssemble through anomalib's own export path, in subprocesses.

One tiny model is trained once with ``anomalib train --model DivideAssemble`` and exported with
``anomalib export`` to OpenVINO (with and without ``--input_size``) and with ``Engine.export`` to ONNX and
torch. The exported
graphs must reproduce the PyTorch model on fresh images, run in anomalib's inferencers and in the
folder command of ``anomalib_divass.inference``, and bad inputs must fail with a message naming the fix.

Two PyTorch references exist, because anomalib exports the pre-processor's ``Resize`` without
antialiasing (its "export transform") while training, ``anomalib test`` and ``anomalib predict`` resize
with antialiasing:

* ``forward_path``: ``model(images)``, the module the graph is exported from. The graph must match it
  for images of any size.
* ``training_path``: resize as in training, then the network and the post-processor: what ``anomalib
  test`` and ``anomalib predict`` compute. ``OpenVINOModel`` (it resizes like training before the graph)
  must match it for images of any size; the bare graph matches it when no down-scaling is needed.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import io
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_helpers import anomalib, mvtec
from PIL import Image

from anomalib_divass import DivideAssemble
from anomalib_divass.compat import check_cli_arguments
from anomalib_divass.demo.data import render_sample
from anomalib_divass.inference import InputSizeError, OpenVINOModel
from anomalib_divass.models.divide_assemble.checkpoint import CheckpointNotFoundError, WrongCheckpointError
from anomalib_divass.models.divide_assemble.export import ExportFolderError, quantized_inputs

pytestmark = pytest.mark.integration

EPOCHS = 3
TOLERANCE = 1e-4  # on normalised scores and maps
F32 = {"INFERENCE_PRECISION_HINT": "f32"}
# Fresh images: (height, width) of each; the first three are normal, the others carry a red blot.
FRESH_SIZES = [(128, 128), (150, 130), (300, 340), (128, 128), (96, 112), (256, 256)]


def last_lines(process: subprocess.CompletedProcess, count: int = 40) -> str:
    return "\n".join((process.stdout + process.stderr).splitlines()[-count:])


def flat(text: str) -> str:
    """Join rich's wrapped traceback lines, so that messages can be searched as one string."""
    return " ".join(text.replace("│", " ").split())


@dataclass
class Trained:
    root: Path
    workdir: Path
    checkpoint: Path


@pytest.fixture(scope="module")
def trained(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    workdir = tmp_path_factory.mktemp("export_run")
    quick = [
        "--data.train_batch_size",
        "8",
        "--data.num_workers",
        "0",
        "--trainer.max_epochs",
        str(EPOCHS),
        "--trainer.enable_progress_bar",
        "false",
    ]
    process = anomalib("train", "--model", "DivideAssemble", *mvtec(tiny_root), *quick, cwd=workdir)
    assert process.returncode == 0, last_lines(process)
    checkpoint = workdir / "results" / "DivideAssemble" / "MVTecAD" / "washer" / "latest" / "weights" / "lightning"
    return Trained(tiny_root, workdir, checkpoint / "model.ckpt")


# The OpenVINO exports run the real command line; ONNX and torch go through the same Engine.export in-process.
EXPORTS = {
    "openvino": (["--export_type", "openvino"], "openvino/model.xml"),
    "openvino_fixed": (["--export_type", "openvino", "--input_size", "[256,256]"], "openvino/model.xml"),
    "onnx": ({"export_type": "onnx"}, "onnx/model.onnx"),
    "torch": ({"export_type": "torch"}, "torch/model.pt"),
}


@pytest.fixture(scope="module")
def export(trained: Trained) -> Callable[[str], Path]:
    """``export(kind)`` exports once per kind with anomalib's ``Engine.export`` and returns the model file."""

    @functools.cache
    def exported(kind: str) -> Path:
        flags, relative = EXPORTS[kind]
        root = trained.workdir / f"export_{kind}"
        if isinstance(flags, dict):
            with contextlib.redirect_stdout(io.StringIO()):
                export_in_process(**flags, ckpt_path=trained.checkpoint, export_root=root)
            return root / "weights" / relative
        location = ["--ckpt_path", str(trained.checkpoint), "--export_root", str(root)]
        process = anomalib("export", "--model", "DivideAssemble", *flags, *location, cwd=trained.workdir)
        assert process.returncode == 0, last_lines(process)
        path = root / "weights" / relative
        assert path.is_file(), last_lines(process)
        return path

    return exported


def export_in_process(**kwargs: object) -> Path | None:
    """``Engine.export`` of a fresh ``DivideAssemble`` (``ckpt_path`` loads the weights)."""
    from anomalib.engine import Engine

    return Engine(logger=False, default_root_dir=kwargs.get("export_root", "results")).export(
        DivideAssemble(), **kwargs
    )


@pytest.fixture(scope="module")
def torch_model(trained: Trained) -> DivideAssemble:
    return DivideAssemble.load_from_checkpoint(trained.checkpoint).eval()


def fresh_image(rng: np.random.Generator, size: tuple[int, int], defect: bool) -> np.ndarray:
    """A washer never seen in training, ``(H, W, 3)`` uint8, optionally with a red blot."""
    image, _ = render_sample(rng, 128, None)
    if defect:
        row, column = rng.integers(30, 80, size=2)
        image[row : row + 20, column : column + 20] = (0.9, 0.1, 0.1)
    picture = Image.fromarray((image * 255).astype(np.uint8))
    return np.asarray(picture.resize((size[1], size[0]), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def fresh_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fresh")
    rng = np.random.default_rng(2024)
    for index, size in enumerate(FRESH_SIZES):
        Image.fromarray(fresh_image(rng, size, defect=index >= 3)).save(folder / f"{index:02d}.png")
    return folder


def read(path: Path) -> torch.Tensor:
    from anomalib_divass.data import read_image

    return read_image(path, as_tensor=True)


def as_numpy(batch: Any) -> dict[str, np.ndarray]:
    return {name: value.numpy() for name, value in batch._asdict().items() if value is not None}


def arrays(result: Any) -> dict[str, np.ndarray]:
    """The prediction fields of an inferencer's result as arrays."""
    return {
        name: np.asarray(getattr(result, name)) for name in ("pred_score", "pred_label", "anomaly_map", "pred_mask")
    }


def forward_path(model: DivideAssemble, images: torch.Tensor) -> dict[str, np.ndarray]:
    """``model(images)``: the export transform (resize without antialiasing), network, post-processor."""
    with torch.no_grad():
        return as_numpy(model(images))


def training_path(model: DivideAssemble, images: torch.Tensor) -> dict[str, np.ndarray]:
    """What ``anomalib test`` / ``predict`` compute: the training transform, network, post-processor."""
    with torch.no_grad():
        return as_numpy(model.post_processor(model.model(model.pre_processor.transform(images))))


def assert_same(actual: dict[str, np.ndarray], reference: dict[str, np.ndarray], where: str = "") -> None:
    assert set(actual) >= {"pred_score", "pred_label", "anomaly_map", "pred_mask"}, actual.keys()
    score_diff = np.abs(actual["pred_score"].reshape(-1) - reference["pred_score"].reshape(-1)).max()
    map_diff = np.abs(actual["anomaly_map"] - reference["anomaly_map"].reshape(actual["anomaly_map"].shape)).max()
    assert score_diff <= TOLERANCE, f"{where}: scores differ by {score_diff}"
    assert map_diff <= TOLERANCE, f"{where}: maps differ by {map_diff}"
    labels = actual["pred_label"].reshape(-1).astype(bool)
    assert np.array_equal(labels, reference["pred_label"].reshape(-1).astype(bool)), where
    masks = actual["pred_mask"].astype(bool).reshape(reference["pred_mask"].shape)
    flipped = int((masks != reference["pred_mask"].astype(bool)).sum())
    assert flipped == 0, f"{where}: {flipped} mask pixels differ"


def compile_f32(path: Path) -> Any:
    import openvino as ov

    return ov.Core().compile_model(str(path), "CPU", F32)


def run_compiled(compiled: Any, images: torch.Tensor) -> dict[str, np.ndarray]:
    return {output.get_any_name(): value for output, value in compiled(images.numpy()).items()}


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("kind", list(EXPORTS))
def test_export_gives_one_graph_with_post_processing(kind: str, export: Callable[[str], Path]) -> None:
    path = export(kind)
    if kind == "torch":
        exported = torch.load(path, weights_only=False)["model"]
        assert isinstance(exported, DivideAssemble)
        assert exported.pre_processor is not None
        assert exported.post_processor is not None
        return
    import openvino as ov

    model = ov.Core().read_model(str(path))
    outputs = {output.get_any_name() for output in model.outputs}
    assert outputs == {"pred_score", "pred_label", "anomaly_map", "pred_mask"}  # thresholds are inside the graph
    shape = model.input(0).get_partial_shape()
    if kind == "openvino_fixed":
        assert [shape[2].get_length(), shape[3].get_length()] == [256, 256]
    else:
        assert shape[2].is_dynamic
        assert shape[3].is_dynamic  # the Resize is in the graph: any image size


def test_openvino_fp32_graph_matches_the_pytorch_forward_for_any_size(
    export: Callable[[str], Path], torch_model: DivideAssemble, fresh_folder: Path
) -> None:
    compiled = compile_f32(export("openvino"))
    for path in sorted(fresh_folder.glob("*.png")):
        image = read(path)[None]
        assert_same(run_compiled(compiled, image), forward_path(torch_model, image), path.name)
    batch = torch.stack([read(fresh_folder / f"{index:02d}.png") for index in (0, 3)])  # two 128 x 128 images
    assert_same(run_compiled(compiled, batch), forward_path(torch_model, batch), "batch of 2")


def test_openvino_fp32_model_matches_anomalib_test_and_predict_for_any_size(
    export: Callable[[str], Path], torch_model: DivideAssemble, fresh_folder: Path
) -> None:
    model = OpenVINOModel(export("openvino"), precision="f32")
    for path in sorted(fresh_folder.glob("*.png")):  # 300 x 340 is down-scaled: antialiasing matters
        actual = arrays(model.predict(path))
        assert_same(actual, training_path(torch_model, read(path)[None]), path.name)


def test_fixed_size_openvino_fp32_matches_pytorch(
    export: Callable[[str], Path], torch_model: DivideAssemble, fresh_folder: Path
) -> None:
    compiled = compile_f32(export("openvino_fixed"))
    images = torch.cat(
        [torch_model.pre_processor.transform(read(path)[None]) for path in sorted(fresh_folder.glob("*.png"))]
    )
    reference = training_path(torch_model, images)
    assert_same(reference, forward_path(torch_model, images), "256 x 256: both PyTorch paths agree")
    assert_same(run_compiled(compiled, images), reference, "256 x 256 batch")


def test_onnx_export_in_openvino_matches_pytorch(
    export: Callable[[str], Path], torch_model: DivideAssemble, fresh_folder: Path
) -> None:
    compiled = compile_f32(export("onnx"))
    for path in sorted(fresh_folder.glob("*.png"))[:3]:
        image = read(path)[None]
        assert_same(run_compiled(compiled, image), forward_path(torch_model, image), path.name)


def test_onnxruntime_matches_pytorch(
    export: Callable[[str], Path], torch_model: DivideAssemble, fresh_folder: Path
) -> None:
    import onnxruntime  # in the test extra: this check never skips

    session = onnxruntime.InferenceSession(str(export("onnx")), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    for path in sorted(fresh_folder.glob("*.png")):
        image = read(path)[None]
        actual = dict(zip(names, session.run(None, {"input": image.numpy()}), strict=True))
        assert_same(actual, forward_path(torch_model, image), path.name)


def test_torch_export_runs_in_torch_inferencer(
    export: Callable[[str], Path], torch_model: DivideAssemble, fresh_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anomalib.deploy import TorchInferencer

    monkeypatch.setenv("TRUST_REMOTE_CODE", "1")  # anomalib refuses to unpickle .pt files otherwise
    inferencer = TorchInferencer(export("torch"), device="cpu")
    path = fresh_folder / "04.png"
    result = inferencer.predict(path)  # anomalib runs it without torch.no_grad: detach
    reference = forward_path(torch_model, read(path)[None])
    actual = {name: getattr(result, name).detach().numpy() for name in reference}
    assert_same(actual, reference, path.name)


def test_export_after_inference_mode_forward(trained: Trained, tmp_path: Path) -> None:
    # Engine.train/test/predict run under torch.inference_mode, then users export in the same process.
    model = DivideAssemble.load_from_checkpoint(trained.checkpoint).eval()
    with torch.inference_mode():
        model(torch.rand(1, 3, 256, 256))
    with contextlib.redirect_stdout(io.StringIO()):
        assert model.to_onnx(tmp_path).is_file()


def test_int8_ptq_quantizes_only_the_convolutions(trained: Trained, fresh_folder: Path, tmp_path: Path) -> None:
    import openvino as ov
    from anomalib.deploy import CompressionType

    from anomalib_divass import MVTec

    model = DivideAssemble.load_from_checkpoint(trained.checkpoint).eval()
    with pytest.raises(ValueError, match="pass --data"):
        model.to_openvino(tmp_path, compression_type=CompressionType.INT8_PTQ)
    datamodule = MVTec(root=trained.root, category="washer", num_workers=0)  # calibrates on its training images
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        path = model.to_openvino(tmp_path, compression_type=CompressionType.INT8_PTQ, datamodule=datamodule)
    quantized = quantized_inputs(ov.Core().read_model(str(path)))
    assert "Convolution" in quantized
    assert set(quantized) <= {
        "Convolution",
        "Concat",
        "Reshape",
    }  # memory addressing and scoring stay in floating point
    assert np.isfinite(arrays(OpenVINOModel(path).predict(fresh_folder / "04.png"))["anomaly_map"]).all()


# --------------------------------------------------------------------------- inference on a folder


def test_anomalib_openvino_inferencer_on_a_folder(
    export: Callable[[str], Path],
    torch_model: DivideAssemble,
    fresh_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from anomalib.deploy import OpenVINOInferencer

    monkeypatch.chdir(tmp_path)  # anomalib's inferencer writes ./openvino_cache
    inferencer = OpenVINOInferencer(export("openvino"), device="CPU", config=F32)
    for path in sorted(fresh_folder.glob("*.png")):
        result = inferencer.predict(path)
        reference = forward_path(torch_model, read(path)[None])  # it feeds the image as it is
        actual = {name: np.asarray(getattr(result, name)) for name in reference}
        assert_same(actual, reference, path.name)


def test_folder_command_matches_pytorch(
    export: Callable[[str], Path],
    torch_model: DivideAssemble,
    fresh_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from anomalib_divass.inference.command import main

    monkeypatch.chdir(tmp_path)
    output, masks = tmp_path / "scores.csv", tmp_path / "masks"
    flags = ["--output", str(output), "--masks", str(masks), "--precision", "f32"]
    assert main(["--model", str(export("openvino")), "--data", str(fresh_folder), *flags]) == 0
    assert f"{len(FRESH_SIZES)} images" in capsys.readouterr().out
    with output.open() as file:
        rows = {Path(row["image"]).name: row for row in csv.DictReader(file)}
    assert sorted(rows) == [f"{index:02d}.png" for index in range(len(FRESH_SIZES))]
    for index, size in enumerate(FRESH_SIZES):
        row = rows[f"{index:02d}.png"]
        reference = training_path(torch_model, read(fresh_folder / f"{index:02d}.png")[None])
        assert abs(float(row["pred_score"]) - float(reference["pred_score"][0])) <= TOLERANCE
        assert bool(int(row["pred_label"])) == bool(reference["pred_label"][0])
        with Image.open(masks / f"{index:02d}.png") as mask:
            assert (mask.height, mask.width) == size  # masks come back at the image size
    assert not (tmp_path / "openvino_cache").exists()


def test_cli_argument_check_names_the_fix() -> None:
    argv = ["/venv/bin/anomalib", "predict", "--model", "DivideAssemble", "--ckpt_path", "exports/model.xml"]
    with pytest.raises(WrongCheckpointError, match=r"exported OpenVINO model, not a training checkpoint"):
        check_cli_arguments(argv)
    with pytest.raises(CheckpointNotFoundError, match=r"Pass --ckpt_path"):
        check_cli_arguments(["anomalib", "test", "--ckpt_path=results/none.ckpt"])
    check_cli_arguments(["python", "predict", "--ckpt_path", "model.xml"])  # not the anomalib command: no check


def test_anomalib_predict_runs_an_exported_model_on_a_folder(
    export: Callable[[str], Path], trained: Trained, torch_model: DivideAssemble, fresh_folder: Path
) -> None:
    model = export("openvino")
    command = ["predict", "--model", "DivideAssemble", "--ckpt_path", str(model), "--data", str(fresh_folder)]
    process = anomalib(*command, cwd=trained.workdir)
    assert process.returncode == 0, process.stderr[-3000:]
    results = trained.workdir / "results" / "DivideAssemble" / "exported"
    with (results / "v0" / "predictions.csv").open() as file:
        rows = {Path(row["image"]).name: row for row in csv.DictReader(file)}
    assert sorted(rows) == [f"{index:02d}.png" for index in range(len(FRESH_SIZES))]
    for index, size in enumerate(FRESH_SIZES):
        reference = training_path(torch_model, read(fresh_folder / f"{index:02d}.png")[None])
        # OpenVINO's default precision (bf16 on this CPU): scores within bf16 rounding, not 1e-4.
        expected = float(reference["pred_score"][0])
        assert float(rows[f"{index:02d}.png"]["pred_score"]) == pytest.approx(expected, abs=2e-2)
        with Image.open(results / "v0" / "masks" / f"{index:02d}.png") as mask:
            assert (mask.height, mask.width) == size
    # A second run never overwrites the first: it gets the next results folder.
    assert anomalib(*command, cwd=trained.workdir).returncode == 0
    assert (results / "v1" / "predictions.csv").is_file()


def test_anomalib_predict_of_an_exported_model_honours_default_root_dir(
    export: Callable[[str], Path], fresh_folder: Path, tmp_path: Path
) -> None:
    model, results = export("openvino"), tmp_path / "my results"
    command = ["predict", "--model", "DivideAssemble", "--ckpt_path", str(model), "--data", str(fresh_folder)]
    process = anomalib(*command, "--default_root_dir", str(results), cwd=tmp_path)
    assert process.returncode == 0, process.stderr[-3000:]
    with (results / "DivideAssemble" / "exported" / "v0" / "predictions.csv").open() as file:
        assert len(list(csv.DictReader(file))) == len(FRESH_SIZES)
    assert not (tmp_path / "results").exists()  # not anomalib's default ./results


def test_anomalib_predict_on_an_exported_model_without_images_names_the_fix(
    export: Callable[[str], Path], trained: Trained
) -> None:
    model = export("openvino")
    process = anomalib("predict", "--model", "DivideAssemble", "--ckpt_path", str(model), cwd=trained.workdir)
    assert process.returncode == 2
    message = flat(process.stderr)
    assert "is an exported OpenVINO model, not a training checkpoint" in message
    assert "python -m anomalib_divass.inference" in message


# --------------------------------------------------------------------------- bad input


def test_wrong_image_size_for_a_fixed_size_export_names_the_fix(
    export: Callable[[str], Path],
    torch_model: DivideAssemble,
    fresh_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from anomalib.deploy import OpenVINOInferencer

    monkeypatch.chdir(tmp_path)
    path = export("openvino_fixed")
    image = np.random.default_rng(0).random((300, 200, 3)).astype(np.float32)
    with pytest.raises(RuntimeError, match=r"shape=\[\?,3,256,256\]"):  # anomalib's: the shapes, but no fix
        OpenVINOInferencer(path, device="CPU").predict(image)
    with pytest.raises(InputSizeError) as error:
        OpenVINOModel(path, precision="f32", resize=False).predict(image)
    message = str(error.value)
    assert "--input_size [256,256]" in message
    assert "got 300 x 200" in message
    assert "Resize the images to 256 x 256" in message
    assert "without --input_size" in message
    # With its default resize=True, OpenVINOModel resizes like training: any size works and matches PyTorch.
    fresh = fresh_folder / "02.png"  # 300 x 340
    actual = arrays(OpenVINOModel(path, precision="f32").predict(fresh))
    assert_same(actual, training_path(torch_model, read(fresh)[None]), fresh.name)


@pytest.fixture(scope="module")
def padim_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine Lightning checkpoint of anomalib's Padim (untrained backbone, nothing fitted)."""
    from anomalib.models import Padim
    from lightning.pytorch import Trainer

    folder = tmp_path_factory.mktemp("padim")
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=folder)
    trainer.strategy.connect(Padim(pre_trained=False))
    trainer.save_checkpoint(folder / "model.ckpt")
    return folder / "model.ckpt"


def test_checkpoint_of_another_model_names_it(padim_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(WrongCheckpointError, match=r"not a DivideAssemble checkpoint.*Use it with --model Padim"):
        export_in_process(export_type="openvino", ckpt_path=padim_checkpoint, export_root=tmp_path)


def test_exported_model_as_checkpoint_names_the_fix(tmp_path: Path) -> None:
    exported = tmp_path / "weights" / "openvino" / "model.xml"
    exported.parent.mkdir(parents=True)
    exported.write_text("<net/>")
    with pytest.raises(WrongCheckpointError, match=r"exported OpenVINO model, not a training checkpoint"):
        export_in_process(export_type="onnx", ckpt_path=exported, export_root=tmp_path)


def test_unwritable_export_folder_fails_before_exporting(trained: Trained, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportFolderError, match=r"Cannot write the openvino export to .*Pass --export_root"):
        export_in_process(export_type="openvino", ckpt_path=trained.checkpoint, export_root=blocker / "exports")


def test_read_only_export_folder_names_the_fix(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anomalib_divass.models.divide_assemble import export as export_module

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.name != "posix" or os.geteuid() == 0:  # root writes into read-only folders: refuse as the OS would
        create = export_module.tempfile.NamedTemporaryFile

        def refuse_in_locked(*args: Any, **kwargs: Any) -> Any:
            if Path(kwargs.get("dir", "")).is_relative_to(locked):
                raise PermissionError(errno.EACCES, "Permission denied", str(kwargs["dir"]))
            return create(*args, **kwargs)

        monkeypatch.setattr(export_module.tempfile, "NamedTemporaryFile", refuse_in_locked)
    try:
        with pytest.raises(ExportFolderError, match=r"Permission denied.*Pass --export_root"):
            export_in_process(export_type="torch", ckpt_path=trained.checkpoint, export_root=locked)
    finally:
        locked.chmod(0o700)
    assert not list(locked.rglob("model.pt"))  # refused before exporting


def anomalib_export(trained: Trained, *flags: str) -> subprocess.CompletedProcess:
    return anomalib("export", "--model", "DivideAssemble", "--export_type", "openvino", *flags, cwd=trained.workdir)


def test_cli_missing_checkpoint_names_the_fix(trained: Trained) -> None:
    process = anomalib_export(trained, "--ckpt_path", "results/nowhere/model.ckpt")
    assert process.returncode != 0
    assert "No checkpoint at" in flat(process.stderr)
    assert "Pass --ckpt_path the model.ckpt" in flat(process.stderr)
