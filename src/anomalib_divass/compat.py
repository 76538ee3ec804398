"""Workarounds of anomalib 2.7 / Lightning behaviour, in one place, applied by the command-line entry points.

Nothing here runs on import. The two entry points (``anomalib`` through the ``.pth`` hook, and
``anomalib-divass``) call :func:`apply` before anomalib parses its arguments. Each workaround names the
behaviour it works around, and ``tests/unit/test_compat.py`` holds, for each, a test that fails once
anomalib fixes that behaviour (so the workaround can go) and tests that the workaround works:

* :func:`seed_everything_before_instantiation`: anomalib 2.7's ``AnomalibCLI`` parses ``--seed_everything``
  but never seeds.
* :func:`check_cli_arguments`: Lightning unpickles ``--ckpt_path`` before any model code runs, so a missing
  file or an exported model fails with an error that names neither the file's kind nor the fix.
* :func:`exported_prediction_arguments`: anomalib 2.7's ``predict`` only runs training checkpoints; an
  exported DivideAssemble model (``model.xml`` / ``model.onnx``, recognised by the marker its export
  writes) is run by the plugin instead.

The command-line workarounds act only on commands about DivideAssemble: another model's command, checkpoint
or exported model reaches anomalib untouched.

One more lives in the ``.pth`` hook (``_anomalib_divass_hook``), because it must act before anomalib's CLI
module loads: anomalib 2.7's ``anomalib.cli.cli``, imported before Lightning's ``Trainer``, makes Python's
``typing`` cache hand the Trainer's ``int | float`` options (``limit_train_batches``, ``val_check_interval``,
...) to jsonargparse float first, so ``--trainer.limit_train_batches 1`` means every batch; the hook imports
the plugin (and so Lightning) first, as ``anomalib-divass`` does, and both read 1 as one batch. Watched by
``tests/unit/test_compat.py::test_anomalib_cli_still_reads_int_or_float_options_as_floats``.

"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from .models.divide_assemble.checkpoint import (
    CheckpointNotFoundError,
    WrongCheckpointError,
    check_checkpoint_path,
    exported_format,
)
from .models.divide_assemble.export import exported_by_divide_assemble

__all__ = [
    "apply",
    "check_cli_arguments",
    "cli_option",
    "exit_on_bad_cli_arguments",
    "exported_prediction_arguments",
    "names_divide_assemble",
    "seed_everything_before_instantiation",
]

CHECKPOINT_SUBCOMMANDS = {"fit", "train", "validate", "test", "predict", "export"}
CLI_NAMES = {"anomalib", "anomalib-divass"}
# --ckpt_path values that are not files (Lightning's and anomalib's keywords).
CHECKPOINT_KEYWORDS = {"best", "last", "hpc", "registry", "null", "None"}
_MODEL_NAME = re.compile(r"\bDivideAssemble\b")


def _is_anomalib_command(argv: Sequence[str]) -> bool:
    """Whether ``argv`` is a run of ``anomalib`` or ``anomalib-divass`` (not another program importing anomalib)."""
    if not argv:
        return False
    program = Path(argv[0])
    return program.name.removesuffix(".exe") in CLI_NAMES or program.resolve() == Path(__file__).with_name("cli.py")


def cli_option(argv: Sequence[str], name: str) -> str | None:
    """The value of option ``name`` (``--name value`` or ``--name=value``) in ``argv``, the last one given.

    Args:
        argv: The command line.
        name: The option, e.g. ``"--data"``.

    Returns:
        The value, or ``None`` if the option is not given.

    Example:
        >>> cli_option(["anomalib", "predict", "--ckpt_path=a.ckpt", "--data", "images"], "--data")
        'images'

    """
    value = None
    for index, argument in enumerate(argv):
        if argument == name and index + 1 < len(argv):
            value = argv[index + 1]
        elif argument.startswith(f"{name}="):
            value = argument.split("=", 1)[1]
    return value


def _config_model(path: str) -> object:
    """The ``model`` entry of a ``--config`` file, or ``None`` (no such entry, or unreadable)."""
    import yaml  # noqa: PLC0415  (only when a config is given)

    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return config.get("model") if isinstance(config, dict) else None


def names_divide_assemble(argv: Sequence[str]) -> bool | None:
    """Whether the command's model is DivideAssemble: ``True``, ``False`` (another model) or ``None`` (none named).

    The model is the last ``--model`` / ``--model.class_path`` value (a class name or path, a YAML/JSON
    string, or a file), else the ``model`` of the last ``--config`` file that has one.

    Args:
        argv: The command line.

    Returns:
        ``True`` for DivideAssemble, ``False`` for another model, ``None`` when no model is named.

    Example:
        >>> names_divide_assemble(["anomalib", "train", "--model", "anomalib_divass.DivideAssemble"])
        True
        >>> names_divide_assemble(["anomalib", "predict", "--model=Padim"]), names_divide_assemble(["anomalib"])
        (False, None)

    """
    model: object = cli_option(argv, "--model.class_path") or cli_option(argv, "--model")
    if isinstance(model, str) and Path(model).suffix.lower() in {".yaml", ".yml"} and Path(model).is_file():
        model = Path(model).read_text(encoding="utf-8")
    if model is None:
        configs = [value for index, value in enumerate(argv) if index and argv[index - 1] == "--config"]
        configs += [argument.split("=", 1)[1] for argument in argv if argument.startswith("--config=")]
        found = [entry for entry in map(_config_model, configs) if entry is not None]
        model = found[-1] if found else None
    if model is None:
        return None
    return _MODEL_NAME.search(str(model)) is not None


def _concerns_divide_assemble(argv: Sequence[str], checkpoint: str) -> bool:
    """Whether a ``--ckpt_path`` check is the plugin's to make: the command or the file is DivideAssemble's."""
    if exported_by_divide_assemble(checkpoint):
        return True
    named = names_divide_assemble(argv)
    if named is not None:
        return named
    # No model named: a missing file or a training checkpoint is checked; another model's export is left alone.
    return exported_format(checkpoint) is None or not Path(checkpoint).exists()


def check_cli_arguments(argv: Sequence[str]) -> None:
    """Check the ``--ckpt_path`` of an ``anomalib`` / ``anomalib-divass`` command about DivideAssemble.

    Works around: Lightning unpickles ``--ckpt_path`` of ``test`` and ``predict`` before any model code
    runs, so a missing file fails with a bare ``FileNotFoundError`` and an exported model (``model.xml``)
    with an unpickling error ("invalid load key" / "Unsupported operand 60"), neither naming the fix.
    Watched by ``tests/unit/test_compat.py::test_lightning_still_unpickles_an_exported_model``.

    Acts only when ``argv[0]`` is one of those commands, the subcommand takes a checkpoint, and the command
    is about DivideAssemble: ``--model`` (or the ``--config``) names it, or the file is a DivideAssemble
    export, or, with no model named, the file is missing or not an exported model. Another model's command or
    exported model reaches anomalib untouched.

    Args:
        argv: ``sys.argv``.

    Raises:
        CheckpointNotFoundError: If ``--ckpt_path`` names a missing file.
        WrongCheckpointError: If it names an exported model.

    Example:
        >>> check_cli_arguments(["anomalib", "test", "--model", "DivideAssemble", "--ckpt_path", "a.xml"])
        Traceback (most recent call last):
        ...
        anomalib_divass.models.divide_assemble.checkpoint.WrongCheckpointError: 'a.xml' is an exported OpenVINO ...
        >>> check_cli_arguments(["anomalib", "test", "--model", "Padim", "--ckpt_path", "a.xml"])  # anomalib's

    """
    if len(argv) < 2 or not _is_anomalib_command(argv) or argv[1] not in CHECKPOINT_SUBCOMMANDS:
        return
    value = cli_option(argv, "--ckpt_path")
    if value and value not in CHECKPOINT_KEYWORDS and _concerns_divide_assemble(argv, value):
        check_checkpoint_path(value)


def exported_prediction_arguments(argv: Sequence[str]) -> tuple[str, str] | None:
    """``(model, images)`` when ``argv`` is ``anomalib predict`` of an exported DivideAssemble model on a path.

    Works around: anomalib 2.7's ``predict`` only runs training checkpoints (Lightning unpickles
    ``--ckpt_path``); the plugin runs an exported DivideAssemble ``model.xml`` / ``model.onnx`` on
    ``--data <folder or image>`` itself. Only files carrying the marker of DivideAssemble's export
    (:func:`~anomalib_divass.models.divide_assemble.export.exported_by_divide_assemble`) are taken over:
    another model's export goes to anomalib as it is. Watched by
    ``tests/unit/test_compat.py::test_anomalib_predict_still_runs_only_checkpoints``.

    Args:
        argv: ``sys.argv``.

    Returns:
        The exported model and the images, or ``None`` when anomalib should run the command.

    Example:
        A training checkpoint is left to anomalib:

        >>> exported_prediction_arguments(["anomalib", "predict", "--ckpt_path", "model.ckpt", "--data", "."]) is None
        True

    """
    if len(argv) < 2 or not _is_anomalib_command(argv) or argv[1] != "predict":
        return None
    model, images = cli_option(argv, "--ckpt_path"), cli_option(argv, "--data")
    if model is None or images is None or exported_format(model) not in {"OpenVINO", "ONNX"}:
        return None
    if not exported_by_divide_assemble(model) or not Path(images).exists():
        return None  # another model's export, or missing images: anomalib (or check_cli_arguments) says so
    if Path(model).suffix.lower() == ".bin":
        model = str(Path(model).with_suffix(".xml"))
    return model, images


def exit_on_bad_cli_arguments(argv: Sequence[str]) -> None:
    """:func:`check_cli_arguments`, printing the message and exiting with status 2 on a bad argument.

    ``anomalib predict --ckpt_path model.xml --data <folder>`` of an exported DivideAssemble model is run
    here with :func:`anomalib_divass.inference.predict_with_exported_model`, and the command exits with
    its status (see :func:`exported_prediction_arguments`).

    Args:
        argv: ``sys.argv``.

    Raises:
        SystemExit: With status 2 after printing the message, or the exported model's run status.

    """
    exported = exported_prediction_arguments(argv)
    if exported is not None:
        from .inference.command import predict_with_exported_model  # noqa: PLC0415  (OpenVINO only when needed)

        raise SystemExit(predict_with_exported_model(*exported, cli_option(argv, "--default_root_dir") or "results"))
    try:
        check_cli_arguments(argv)
    except (CheckpointNotFoundError, WrongCheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def seed_everything_before_instantiation() -> None:
    """Make anomalib's ``--seed_everything`` seed, as its help says (anomalib 2.7 parses it, never seeds).

    Works around: ``AnomalibCLI`` declares ``--seed_everything`` ("run seed_everything with this value before
    classes instantiation") but neither its ``instantiate_classes`` nor anything else in ``anomalib.cli``
    calls ``seed_everything``, so two runs with the same seed train different weights. Wraps
    ``AnomalibCLI.instantiate_classes`` (once; the original stays reachable as ``__wrapped__``) to call
    Lightning's ``seed_everything`` with the option's value first, as ``LightningCLI`` does: an int seeds with
    it, ``True`` (the default) calls ``seed_everything()`` (the seed of ``PL_GLOBAL_SEED``, which the first
    process sets for the processes DDP starts, else Lightning's default), ``False`` does not seed. Watched by
    ``tests/unit/test_compat.py::test_anomalib_cli_still_does_not_seed``.
    """
    from anomalib.cli.cli import AnomalibCLI  # noqa: PLC0415

    if getattr(AnomalibCLI.instantiate_classes, "_seeds", False):
        return
    instantiate_classes = AnomalibCLI.instantiate_classes

    @functools.wraps(instantiate_classes)
    def seeded(self: AnomalibCLI) -> None:
        seed = self._get(self.config, "seed_everything")
        if seed is not None and seed is not False:
            from lightning.pytorch import seed_everything  # noqa: PLC0415

            seed_everything(None if seed is True else int(seed), workers=True)
        instantiate_classes(self)

    seeded._seeds = True  # type: ignore[attr-defined]
    AnomalibCLI.instantiate_classes = seeded  # type: ignore[method-assign]


# anomalib modules that read prediction images with ``anomalib.data.utils.read_image`` (bound at import time).
ANOMALIB_IMAGE_READERS = (
    "anomalib.data.predict",
    "anomalib.data.utils.synthetic",
    "anomalib.deploy.inferencers.torch_inferencer",
    "anomalib.deploy.inferencers.openvino_inferencer",
    "anomalib.utils.visualization.image",
)


def read_high_bit_depth_images() -> None:
    """Make anomalib read 16-bit and one-channel images where the plugin's datasets do not read them.

    Works around: anomalib 2.7's ``read_image`` opens every file with ``PIL.Image.open(path).convert("RGB")``,
    which clips the values of a 16-bit PNG above 255, so a 16-bit image becomes almost white and is scored as
    such, silently, by ``anomalib predict --data <folder>`` (``PredictDataset``), the Torch and OpenVINO
    inferencers, synthetic validation anomalies and the image visualizer; a truncated file fails without its
    name. Replaces ``read_image`` in those modules (:data:`ANOMALIB_IMAGE_READERS`) by
    :func:`anomalib_divass.data.read_image`, which returns the same for 8-bit images, scales 16-bit ones by
    their depth and names unreadable files. The ``MVTec`` datasets read with it on their own; anomalib's own
    ``anomalib.data.utils.read_image`` is left as it is. Idempotent. Watched by
    ``tests/unit/test_compat.py::test_anomalib_still_clips_sixteen_bit_images``.
    """
    import importlib  # noqa: PLC0415

    from .data.image import read_image  # noqa: PLC0415

    for name in ANOMALIB_IMAGE_READERS:
        try:
            module = importlib.import_module(name)
        except ImportError:  # an optional part of anomalib that is not installed
            continue
        if hasattr(module, "read_image"):
            module.read_image = read_image


def apply(argv: Sequence[str]) -> None:
    """Apply every workaround for one run of the ``anomalib`` / ``anomalib-divass`` command line.

    Called by the two entry points before anomalib parses ``argv``: the ``.pth`` hook (right after
    ``anomalib.cli.cli`` is imported) and :func:`anomalib_divass.cli.main`. Idempotent.

    Args:
        argv: ``sys.argv`` (the program name first).

    Raises:
        SystemExit: For a bad ``--ckpt_path`` (status 2, message naming the fix), or after running an exported
            DivideAssemble model for ``predict`` (the folder command's status).

    """
    seed_everything_before_instantiation()
    read_high_bit_depth_images()
    exit_on_bad_cli_arguments(argv)
