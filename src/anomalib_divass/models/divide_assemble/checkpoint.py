"""DivideAssemble checkpoints: refuse a missing file, an exported model or another model's checkpoint, clearly.

Lightning would unpickle a missing file or an exported ``model.xml`` with an unhelpful error, and load another
anomalib model's checkpoint into this one with a wall of missing keys. These checks say what the file is and
which flag or file fixes it.

Example:
    >>> exported_format("weights/onnx/model.onnx"), exported_format("model.ckpt")
    ('ONNX', None)

"""

from __future__ import annotations

import inspect
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "WrongCheckpointError",
    "check_checkpoint_model",
    "check_checkpoint_path",
    "exported_format",
    "guess_model",
]


EXPORTED_SUFFIXES = {".xml": "OpenVINO", ".bin": "OpenVINO", ".onnx": "ONNX", ".pt": "torch"}
# Every DivideAssemble checkpoint holds the memory autoencoder under this prefix.
STATE_PREFIX = "model.autoencoder."
DEFAULT_CHECKPOINT = "results/DivideAssemble/<dataset>/<category>/latest/weights/lightning/model.ckpt"


class CheckpointNotFoundError(FileNotFoundError):
    """The checkpoint given to export, test or predict does not exist."""


class WrongCheckpointError(ValueError):
    """The file is not a DivideAssemble training checkpoint (another model, or an exported model)."""


class CorruptCheckpointError(WrongCheckpointError):
    """The checkpoint file is corrupt or incomplete (truncated by an interrupted copy, download or save)."""


# torch.save writes a zip archive (the legacy format, a pickle, starts with the pickle protocol opcode).
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_OPCODE = b"\x80"


def exported_format(path: str | Path) -> str | None:
    """The exported-model format a file name suggests, or ``None`` for anything else.

    Args:
        path: A file name.

    Returns:
        ``"OpenVINO"``, ``"ONNX"``, ``"torch"`` or ``None``.

    Example:
        >>> exported_format("weights/onnx/model.onnx"), exported_format("model.ckpt")
        ('ONNX', None)

    """
    return EXPORTED_SUFFIXES.get(Path(path).suffix.lower())


def _infer_hint() -> str:
    return "python -m anomalib_divass.inference --model <model.xml> --data <folder of images>"


def check_checkpoint_path(path: str | Path) -> Path:
    """Check that ``path`` is an existing training checkpoint, not a missing or exported file.

    Args:
        path: The ``--ckpt_path`` value.

    Returns:
        The path, resolved.

    Raises:
        CheckpointNotFoundError: If the file does not exist (names where training writes it).
        WrongCheckpointError: If it is an exported model rather than a Lightning checkpoint.
        CorruptCheckpointError: If it is empty, truncated or not a PyTorch file (see :func:`check_checkpoint_file`).

    Example:
        >>> check_checkpoint_path("no/such/model.ckpt")
        Traceback (most recent call last):
        ...
        anomalib_divass.models.divide_assemble.checkpoint.CheckpointNotFoundError: No checkpoint at ...

    """
    resolved = Path(path).expanduser().resolve()
    kind = exported_format(resolved)
    if kind is not None:
        msg = (
            f"'{path}' is an exported {kind} model, not a training checkpoint: --ckpt_path needs the Lightning "
            f"checkpoint (model.ckpt) written by `anomalib train` ({DEFAULT_CHECKPOINT}). To run the exported "
            f"model on images use `{_infer_hint()}` or anomalib.deploy.OpenVINOInferencer."
        )
        raise WrongCheckpointError(msg)
    if not resolved.is_file():
        where = "it is a folder" if resolved.is_dir() else "the file does not exist"
        found = _nearby_checkpoints()
        suggestion = f" Checkpoints found nearby: {', '.join(found)}." if found else ""
        msg = (
            f"No checkpoint at '{path}' ({where}). Pass --ckpt_path the model.ckpt written by "
            f"`anomalib train --model DivideAssemble`, by default {DEFAULT_CHECKPOINT}.{suggestion}"
        )
        raise CheckpointNotFoundError(msg)
    check_checkpoint_file(resolved, shown=path)
    return resolved


def check_checkpoint_file(path: str | Path, shown: str | Path | None = None) -> None:
    """Check that an existing file is a complete PyTorch checkpoint, before torch reads it.

    A truncated ``.ckpt`` (a copy, download or save that stopped early) otherwise fails in torch with
    "PytorchStreamReader failed reading zip archive", naming neither the file nor the fix. Reads only the
    archive's directory at the end of the file, not the weights.

    Args:
        path: The checkpoint file.
        shown: How to name the file in the message (default ``path``).

    Raises:
        CorruptCheckpointError: If the file is empty, a zip archive without its directory (truncated), or
            neither a zip archive nor a pickle (what ``torch.save`` writes).

    Example:
        >>> import tempfile
        >>> broken = Path(tempfile.mkdtemp()) / "model.ckpt"
        >>> _ = broken.write_bytes(ZIP_MAGIC + b" cut short")
        >>> check_checkpoint_file(broken)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        anomalib_divass.models.divide_assemble.checkpoint.CorruptCheckpointError: '...model.ckpt' is corrupt ...

    """
    path = Path(path)
    with path.open("rb") as file:
        head = file.read(len(ZIP_MAGIC))
    if not head:
        problem = "the file is empty"
    elif head == ZIP_MAGIC:
        try:
            with zipfile.ZipFile(path) as archive:
                problem = None if archive.namelist() else "its archive holds no data"
        except (zipfile.BadZipFile, OSError) as error:
            problem = f"its archive is cut short or damaged: {error}"
    elif head.startswith(PICKLE_PROTOCOL_OPCODE):
        problem = None  # torch's legacy format: torch names its own errors
    else:
        problem = "it is not a file written by torch.save (neither a zip archive nor a pickle)"
    if problem is not None:
        msg = (
            f"'{shown or path}' is corrupt or incomplete ({problem}), so it cannot be loaded. A copy, download or "
            f"save that stopped early leaves such a file: copy it again, or pass --ckpt_path another model.ckpt "
            f"written by `anomalib train --model DivideAssemble` ({DEFAULT_CHECKPOINT})."
        )
        raise CorruptCheckpointError(msg)


def _nearby_checkpoints(limit: int = 3) -> list[str]:
    """DivideAssemble checkpoints under the working folder's ``results`` (cheap, bounded glob)."""
    results = Path.cwd() / "results"
    if not results.is_dir():
        return []
    found = sorted(results.glob("DivideAssemble/*/*/latest/weights/lightning/*.ckpt"))
    return [str(candidate.relative_to(Path.cwd())) for candidate in found[:limit]]


def _model_signatures() -> dict[str, set[str]]:
    """Constructor argument names of anomalib's models (imported only on the error path)."""
    from anomalib import models  # noqa: PLC0415
    from anomalib.models.components import AnomalibModule  # noqa: PLC0415

    components = {"self", "pre_processor", "post_processor", "evaluator", "visualizer", "args", "kwargs"}
    signatures = {}
    for name in getattr(models, "__all__", []):
        candidate = getattr(models, name, None)
        if inspect.isclass(candidate) and issubclass(candidate, AnomalibModule):
            signatures[name] = set(inspect.signature(candidate.__init__).parameters) - components
    return signatures


def guess_model(hyper_parameters: Mapping[str, Any]) -> list[str]:
    """Anomalib models whose constructor takes every saved hyper-parameter, best match first.

    Args:
        hyper_parameters: The checkpoint's ``hyper_parameters``.

    Returns:
        Model class names (empty if none fits or nothing was saved).

    """
    saved = set(hyper_parameters)
    if not saved:
        return []
    matches = [(len(params - saved), name) for name, params in _model_signatures().items() if saved <= params]
    return [name for _, name in sorted(matches)]


def check_checkpoint_model(checkpoint: Mapping[str, Any]) -> None:
    """Refuse a checkpoint of another anomalib model before its weights are loaded.

    Args:
        checkpoint: The loaded checkpoint dictionary.

    Raises:
        WrongCheckpointError: Naming the model the checkpoint seems to belong to and the fix.

    Example:
        >>> check_checkpoint_model({"state_dict": {"model.autoencoder.encoder.0.0.weight": None}})

    """
    state = checkpoint.get("state_dict", {})
    if any(key.startswith(STATE_PREFIX) for key in state):
        return
    hyper_parameters = checkpoint.get("hyper_parameters", {}) or {}
    candidates = [name for name in guess_model(hyper_parameters) if name != "DivideAssemble"][:3]
    if candidates:
        origin = f"its hyper-parameters ({', '.join(sorted(hyper_parameters))}) are those of {' or '.join(candidates)}"
        fix = f"Use it with --model {candidates[0]}"
    else:
        origin = "it was written by another model"
        fix = "Use it with the model that wrote it"
    msg = (
        f"This is not a DivideAssemble checkpoint: it holds no DivideAssemble weights ({STATE_PREFIX}*) and "
        f"{origin}. {fix}, or pass --ckpt_path the model.ckpt of a DivideAssemble training run ({DEFAULT_CHECKPOINT})."
    )
    raise WrongCheckpointError(msg)
