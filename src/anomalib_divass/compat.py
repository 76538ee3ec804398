"""Workarounds of anomalib 2.7 / Lightning behaviour, in one place, applied by the command-line entry points.

Nothing here runs on import. The two entry points (``anomalib`` through the ``.pth`` hook, and
``anomalib-divass``) call :func:`apply` before anomalib parses its arguments; each workaround names the
behaviour it works around, and ``tests/unit/test_compat.py`` holds, for each, a test that fails once
anomalib fixes that behaviour (so the workaround can go).

"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from .models.divide_assemble.checkpoint import (
    CheckpointNotFoundError,
    WrongCheckpointError,
    check_checkpoint_path,
    exported_format,
)

CHECKPOINT_SUBCOMMANDS = {"fit", "train", "validate", "test", "predict", "export"}
CLI_NAMES = {"anomalib", "anomalib-divass"}


def check_cli_arguments(argv: Sequence[str]) -> None:
    """Check the ``--ckpt_path`` of an ``anomalib`` / ``anomalib-divass`` command line before it runs.

    Lightning unpickles ``--ckpt_path`` of ``test`` and ``predict`` before any model code runs, so a missing
    file or an exported model (``model.xml``) fails with ``FileNotFoundError`` or "Unsupported operand 60".
    Only acts when ``argv[0]`` is one of those commands and the subcommand takes a checkpoint.

    Args:
        argv: ``sys.argv``.

    Raises:
        CheckpointNotFoundError: If ``--ckpt_path`` names a missing file.
        WrongCheckpointError: If it names an exported model.

    Example:
        >>> check_cli_arguments(["anomalib", "test", "--ckpt_path", "a.xml"])  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ...
        WrongCheckpointError: 'a.xml' is an exported OpenVINO model, not a training checkpoint

    """
    if len(argv) < 2 or Path(argv[0]).name not in CLI_NAMES or argv[1] not in CHECKPOINT_SUBCOMMANDS:
        return
    value = cli_option(argv, "--ckpt_path")
    if value and value not in {"best", "last", "hpc", "registry", "null", "None"}:
        check_checkpoint_path(value)


def cli_option(argv: Sequence[str], name: str) -> str | None:
    """The value of option ``name`` (``--name value`` or ``--name=value``) in ``argv``, the last one given.

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


def exported_prediction_arguments(argv: Sequence[str]) -> tuple[str, str] | None:
    """``(model, images)`` when ``argv`` is ``anomalib predict`` of an exported OpenVINO / ONNX model on a path.

    anomalib 2.7's ``predict`` only runs training checkpoints (Lightning unpickles ``--ckpt_path``); the
    plugin runs an exported ``model.xml`` / ``model.onnx`` on ``--data <folder or image>`` itself.

    Example:
        A training checkpoint is left to anomalib:

        >>> exported_prediction_arguments(["anomalib", "predict", "--ckpt_path", "model.ckpt", "--data", "."]) is None
        True

    """
    if len(argv) < 2 or Path(argv[0]).name not in CLI_NAMES or argv[1] != "predict":
        return None
    model, images = cli_option(argv, "--ckpt_path"), cli_option(argv, "--data")
    if model is None or images is None or exported_format(model) not in {"OpenVINO", "ONNX"}:
        return None
    if not Path(model).is_file() or not Path(images).exists():
        return None  # check_cli_arguments / anomalib name what is missing
    return model, images


def exit_on_bad_cli_arguments(argv: Sequence[str]) -> None:
    """:func:`check_cli_arguments`, printing the message and exiting with status 2 on a bad argument.

    ``anomalib predict --ckpt_path model.xml --data <folder>`` (an exported model) is run here with
    :func:`anomalib_divass.inference.predict_with_exported_model`, and the command exits with its status.

    Args:
        argv: ``sys.argv``.

    Raises:
        SystemExit: With status 2 after printing the message.

    """
    exported = exported_prediction_arguments(argv)
    if exported is not None:
        from .inference.command import predict_with_exported_model  # noqa: PLC0415  (OpenVINO only when needed)

        raise SystemExit(predict_with_exported_model(*exported))
    try:
        check_cli_arguments(argv)
    except (CheckpointNotFoundError, WrongCheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None



def seed_everything_before_instantiation() -> None:
    """Make anomalib's ``--seed_everything`` seed, as its help says (anomalib 2.7 parses it, never seeds).

    Works around: ``AnomalibCLI`` declares ``--seed_everything`` ("run seed_everything with this value before
    classes instantiation") but its ``instantiate_classes`` never calls it, so two runs with the same seed train
    different weights. Wraps ``AnomalibCLI.instantiate_classes`` (once) to call Lightning's ``seed_everything``
    with the option's value first: an int seeds with it, ``True`` (the default) with a random seed that Lightning
    also hands to the processes DDP starts (``PL_GLOBAL_SEED``), ``False`` not at all.
    Watched by ``tests/unit/test_compat.py::test_anomalib_cli_still_does_not_seed``.
    """
    from anomalib.cli.cli import AnomalibCLI  # noqa: PLC0415

    if getattr(AnomalibCLI.instantiate_classes, "_seeds", False):
        return
    instantiate_classes = AnomalibCLI.instantiate_classes

    def seeded(self: AnomalibCLI) -> None:
        seed = self._get(self.config, "seed_everything")
        if seed is not None and seed is not False:
            from lightning.pytorch import seed_everything  # noqa: PLC0415

            seed_everything(None if seed is True else int(seed), workers=True)
        instantiate_classes(self)

    seeded._seeds = True  # type: ignore[attr-defined]
    AnomalibCLI.instantiate_classes = seeded  # type: ignore[method-assign]


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
    exit_on_bad_cli_arguments(argv)
