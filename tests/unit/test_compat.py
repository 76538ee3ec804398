"""Workarounds of anomalib behaviour (``anomalib_divass.compat``): each still needed, and each working."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# --------------------------------------------------------------------------- read_high_bit_depth_images


def _sixteen_bit_png(folder: Path) -> Path:
    path = folder / "deep.png"
    Image.fromarray(np.full((16, 16), 16384, dtype=np.uint16)).save(path)  # a quarter of the 16-bit range
    return path


def test_anomalib_still_clips_sixteen_bit_images(tmp_path: Path) -> None:
    """Fails once anomalib reads 16-bit PNGs by their depth: ``read_high_bit_depth_images`` can then go."""
    from anomalib.data.utils import image as anomalib_image

    image = anomalib_image.read_image(_sixteen_bit_png(tmp_path), as_tensor=True)
    assert float(image.min()) == 1.0  # every value above 255 clipped to white by .convert("RGB")


def test_read_high_bit_depth_images_reads_predict_folders_by_depth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anomalib.data import PredictDataset

    from anomalib_divass import compat
    from anomalib_divass.data import ImageReadError, read_image

    for name in compat.ANOMALIB_IMAGE_READERS:  # restored after the test
        module = importlib.import_module(name)
        monkeypatch.setattr(module, "read_image", module.read_image)
    compat.read_high_bit_depth_images()
    compat.read_high_bit_depth_images()  # idempotent
    for name in compat.ANOMALIB_IMAGE_READERS:
        assert importlib.import_module(name).read_image is read_image, name
    path = _sixteen_bit_png(tmp_path)
    (item,) = list(PredictDataset(path))
    assert float(item.image.mean()) == pytest.approx(16384 / 65535, abs=1e-4)
    (tmp_path / "deep.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=r"deep\.png"):
        PredictDataset(tmp_path)[0]


# --------------------------------------------------------------------------- seed_everything_before_instantiation


def test_anomalib_cli_still_does_not_seed() -> None:
    """Fails once anomalib's command line seeds by itself: ``seed_everything_before_instantiation`` can then go."""
    import inspect
    import re

    import anomalib.cli.cli as anomalib_cli

    source = inspect.getsource(anomalib_cli)
    assert "--seed_everything" in source  # the option is declared ...
    assert re.search(r"\bseed_everything\s*\(", source) is None  # ... and nothing calls seed_everything
    original = inspect.unwrap(anomalib_cli.AnomalibCLI.instantiate_classes)  # the plugin's wrapper, if any, unwrapped
    assert "seed" not in inspect.getsource(original)


@pytest.mark.parametrize("seed", [7, True, False, None])
def test_seed_everything_runs_before_instantiation(seed: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect
    import os
    from types import SimpleNamespace

    import torch
    from anomalib.cli.cli import AnomalibCLI

    from anomalib_divass import compat

    draws: list[torch.Tensor] = []

    def instantiate_classes(self: object) -> None:
        del self
        draws.append(torch.rand(4))

    monkeypatch.setattr(AnomalibCLI, "instantiate_classes", instantiate_classes)  # restored after the test
    for variable in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        monkeypatch.delenv(variable, raising=False)
    compat.seed_everything_before_instantiation()
    compat.seed_everything_before_instantiation()  # wraps once
    assert inspect.unwrap(AnomalibCLI.instantiate_classes) is instantiate_classes
    assert AnomalibCLI.instantiate_classes.__wrapped__ is instantiate_classes

    torch.manual_seed(123)
    AnomalibCLI.instantiate_classes(SimpleNamespace(config={"seed_everything": seed}, _get=lambda c, key: c[key]))
    expected_seed = {7: 7, True: int(os.environ.get("PL_GLOBAL_SEED", "-1")), False: 123, None: 123}[seed]
    if seed is True:
        assert expected_seed >= 0  # Lightning's seed_everything(): the seed DDP's processes read from PL_GLOBAL_SEED
    torch.manual_seed(expected_seed)
    assert torch.equal(draws[0], torch.rand(4))


# --------------------------------------------------------------------------- the exported-model marker


def tiny_openvino_model(path: Path, marked: bool = False) -> Path:
    """A one-ReLU OpenVINO model (another model's export), or with DivideAssemble's marker."""
    import openvino as ov
    from openvino import opset13 as ops

    from anomalib_divass.models.divide_assemble.export import mark_openvino_model

    image = ops.parameter([1, 3, 8, 8], np.float32, name="input")
    model = ov.Model([ops.relu(image)], [image], "another_model")
    if marked:
        mark_openvino_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, path, compress_to_fp16=False)
    return path


def tiny_onnx_model(path: Path) -> Path:
    """A one-ReLU ONNX model written by the ``onnx`` package (another model's export)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    shape = [1, 3, 8, 8]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"])],
        "another_model",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)
    return path


def test_openvino_marker_is_recognised_cheaply(tmp_path: Path) -> None:
    from anomalib_divass.models.divide_assemble.export import EXPORT_MARKER, exported_by_divide_assemble

    other = tiny_openvino_model(tmp_path / "other" / "model.xml")
    ours = tiny_openvino_model(tmp_path / "ours" / "model.xml", marked=True)
    assert f'<{EXPORT_MARKER[0]} value="{EXPORT_MARKER[1]}"' in ours.read_text()  # in the .xml's rt_info
    assert exported_by_divide_assemble(ours)
    assert exported_by_divide_assemble(ours.with_suffix(".bin"))  # the weights stand for their .xml
    assert not exported_by_divide_assemble(other)
    assert not exported_by_divide_assemble(tmp_path / "missing.xml")
    (tmp_path / "empty.xml").write_bytes(b"")
    assert not exported_by_divide_assemble(tmp_path / "empty.xml")
    (tmp_path / "model.ckpt").write_bytes(ours.read_bytes())
    assert not exported_by_divide_assemble(tmp_path / "model.ckpt")  # only exported-model files


def test_onnx_marker_is_added_once_and_survives_onnx_and_openvino(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    import openvino as ov

    from anomalib_divass.models.divide_assemble.export import (
        EXPORT_MARKER,
        exported_by_divide_assemble,
        mark_onnx_file,
    )

    path = tiny_onnx_model(tmp_path / "model.onnx")
    assert not exported_by_divide_assemble(path)
    mark_onnx_file(path)
    mark_onnx_file(path)  # once
    assert exported_by_divide_assemble(path)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [(entry.key, entry.value) for entry in model.metadata_props] == [EXPORT_MARKER]
    onnx.save(model, tmp_path / "saved_again.onnx")  # onnx's own serialization keeps it
    assert exported_by_divide_assemble(tmp_path / "saved_again.onnx")
    ov.save_model(ov.convert_model(path), tmp_path / "converted.xml")  # OpenVINO copies it into rt_info
    assert exported_by_divide_assemble(tmp_path / "converted.xml")


# --------------------------------------------------------------------------- check_cli_arguments, predict takeover


def test_lightning_still_unpickles_an_exported_model(tmp_path: Path) -> None:
    """Fails once Lightning names an exported model or a missing checkpoint helpfully: ``check_cli_arguments``
    can then go (``anomalib test`` / ``predict`` load ``--ckpt_path`` with this before any model code runs).
    """
    import pickle

    from lightning.pytorch.plugins.io import TorchCheckpointIO

    exported = tiny_openvino_model(tmp_path / "model.xml")
    with pytest.raises(pickle.UnpicklingError) as error:
        TorchCheckpointIO().load_checkpoint(exported)
    message = str(error.value)
    assert "OpenVINO" not in message
    assert "export" not in message.lower()
    assert "weights_only" in message  # it suggests weights_only=False, which cannot load an .xml file
    with pytest.raises(FileNotFoundError) as missing:
        TorchCheckpointIO().load_checkpoint(tmp_path / "missing.ckpt")
    assert "--ckpt_path" not in str(missing.value)


def test_anomalib_predict_still_runs_only_checkpoints() -> None:
    """Fails once anomalib's ``predict`` runs exported models: the plugin's predict takeover can then go."""
    import inspect
    import re

    from anomalib.engine import Engine

    source = inspect.getsource(Engine.predict)
    assert "ckpt_path" in source  # handed to Lightning's trainer.predict, which unpickles it
    assert re.search(r"(?i)openvino|onnx|inferencer|\.xml", source) is None


@pytest.fixture
def exports(tmp_path: Path) -> dict[str, Path]:
    """Another model's OpenVINO and ONNX exports, a DivideAssemble one (marked), and a folder of images."""
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(images / "a.png")
    return {
        "other_xml": tiny_openvino_model(tmp_path / "other" / "model.xml"),
        "other_onnx": tiny_onnx_model(tmp_path / "other" / "model.onnx"),
        "ours": tiny_openvino_model(tmp_path / "ours" / "model.xml", marked=True),
        "images": images,
    }


def test_other_models_exports_reach_anomalib_untouched(exports: dict[str, Path], tmp_path: Path) -> None:
    from anomalib_divass.compat import check_cli_arguments, exit_on_bad_cli_arguments, exported_prediction_arguments

    for model in (exports["other_xml"], exports["other_onnx"]):
        for named in ([], ["--model", "Padim"], ["--model=anomalib.models.Padim"]):
            argv = ["anomalib", "predict", *named, "--ckpt_path", str(model), "--data", str(exports["images"])]
            assert exported_prediction_arguments(argv) is None, argv
            check_cli_arguments(argv)  # no DivideAssemble message: anomalib's own error follows
            exit_on_bad_cli_arguments(argv)  # returns: the command goes on to anomalib
    missing = str(tmp_path / "padim.ckpt")
    check_cli_arguments(["anomalib", "test", "--model", "Padim", "--ckpt_path", missing])  # anomalib says so


def test_divide_assemble_commands_are_checked_and_its_exports_taken_over(
    exports: dict[str, Path], tmp_path: Path
) -> None:
    from anomalib_divass.cli import config_path
    from anomalib_divass.compat import check_cli_arguments, exported_prediction_arguments
    from anomalib_divass.models.divide_assemble.checkpoint import CheckpointNotFoundError, WrongCheckpointError

    ours, images = str(exports["ours"]), str(exports["images"])
    for named in ([], ["--model", "Padim"], ["--model", "DivideAssemble"]):  # the file decides
        argv = ["anomalib", "predict", *named, "--ckpt_path", ours, "--data", images]
        assert exported_prediction_arguments(argv) == (ours, images)
    bin_file = str(exports["ours"].with_suffix(".bin"))
    assert exported_prediction_arguments(["anomalib", "predict", "--ckpt_path", bin_file, "--data", images]) == (
        ours,
        images,
    )
    assert exported_prediction_arguments(["anomalib", "predict", "--ckpt_path", ours, "--data", "nowhere"]) is None
    with pytest.raises(WrongCheckpointError, match="exported OpenVINO model, not a training checkpoint"):
        check_cli_arguments(["anomalib", "test", "--ckpt_path", ours])  # a DivideAssemble export, any --model
    other = str(exports["other_xml"])
    with pytest.raises(WrongCheckpointError, match="exported OpenVINO model"):  # DivideAssemble named: checked
        check_cli_arguments(["anomalib.exe", "test", "--model", "DivideAssemble", "--ckpt_path", other])
    missing = str(tmp_path / "none.ckpt")
    for named in ([], ["--config", str(config_path())], ["--model.class_path", "anomalib_divass.DivideAssemble"]):
        with pytest.raises(CheckpointNotFoundError, match="Pass --ckpt_path"):
            check_cli_arguments(["anomalib-divass", "test", *named, "--ckpt_path", missing])
    check_cli_arguments(["python", "test", "--ckpt_path", ours])  # another program importing anomalib: no check
    check_cli_arguments(["anomalib", "test", "--ckpt_path", "last"])  # Lightning's keywords are not files


def test_exit_on_bad_cli_arguments_runs_or_refuses(
    exports: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from anomalib_divass import compat
    from anomalib_divass.inference import command

    calls: list[tuple[object, ...]] = []
    monkeypatch.setattr(command, "predict_with_exported_model", lambda *args: calls.append(args) or 0)
    ours, images = str(exports["ours"]), str(exports["images"])
    with pytest.raises(SystemExit) as ran:
        compat.exit_on_bad_cli_arguments(["anomalib", "predict", "--ckpt_path", ours, "--data", images])
    assert ran.value.code == 0
    assert calls[0][:2] == (ours, images)
    with pytest.raises(SystemExit) as refused:
        compat.exit_on_bad_cli_arguments(["anomalib", "predict", "--model", "DivideAssemble", "--ckpt_path", ours])
    assert refused.value.code == 2
    assert "error: " in capsys.readouterr().err
    assert len(calls) == 1


def test_names_divide_assemble(tmp_path: Path) -> None:
    from anomalib_divass.cli import config_path
    from anomalib_divass.compat import names_divide_assemble

    padim = tmp_path / "padim.yaml"
    padim.write_text("model:\n  class_path: anomalib.models.Padim\n")
    model_file = tmp_path / "model.yaml"
    model_file.write_text("class_path: anomalib_divass.DivideAssemble\ninit_args:\n  latent_weight: 0.001\n")
    cases = {
        ("--model", "DivideAssemble"): True,
        ("--model", "anomalib_divass.models.divide_assemble.lightning_model.DivideAssemble"): True,
        ("--model.class_path", "anomalib_divass.DivideAssemble"): True,
        ("--model", str(model_file)): True,
        ("--config", str(config_path())): True,
        ("--config", str(padim)): False,
        ("--config", str(config_path()), "--model", "Padim"): False,  # the command line wins over the config
        ("--model", '{"class_path": "anomalib.models.Patchcore"}'): False,
        ("--config", str(tmp_path / "missing.yaml")): None,
        (): None,
    }
    for arguments, expected in cases.items():
        assert names_divide_assemble(["anomalib", "train", *arguments]) is expected, arguments


# --------------------------------------------------------------------------- import order (the .pth hook)


def _printed_limit_train_batches(hook: bool) -> str:
    """``limit_train_batches`` as ``anomalib train --trainer.limit_train_batches 1 --print_config`` parses it."""
    import subprocess
    import sys

    unhook = "sys.meta_path[:] = [f for f in sys.meta_path if not hasattr(f, '_anomalib_divass_cli_watcher')]\n"
    code = (
        "import sys\n" + ("" if hook else unhook) + "from anomalib.cli.cli import main\n"
        "sys.argv = ['anomalib', 'train', '--model', 'Padim', '--model.pre_trained', 'false', '--data', 'MVTecAD',\n"
        "            '--trainer.limit_train_batches', '1', '--print_config']\n"
        "main()\n"
    )
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert process.returncode == 0, process.stderr[-2000:]
    (line,) = [line.strip() for line in process.stdout.splitlines() if "limit_train_batches:" in line]
    return line


def test_anomalib_cli_still_reads_int_or_float_options_as_floats() -> None:
    """Fails once anomalib's command line reads ``--trainer.limit_train_batches 1`` as one batch by itself.

    anomalib's CLI module, imported before Lightning's ``Trainer``, makes the ``typing`` cache hand the Trainer's
    ``int | float`` options to jsonargparse float first; the ``.pth`` hook then need not import the plugin
    before ``anomalib.cli.cli`` (see ``_anomalib_divass_hook``).
    """
    assert _printed_limit_train_batches(hook=False) == "limit_train_batches: 1.0"  # every batch, not one


def test_the_hook_makes_anomalib_read_int_options_as_anomalib_divass_does() -> None:
    assert _printed_limit_train_batches(hook=True) == "limit_train_batches: 1"  # one batch, as Lightning documents
