"""Resume an interrupted training from its last finished epoch, not from scratch.

A finished pair is never retrained (``runner`` stores it at once); this module covers a pair that
was cut off while training (a 50-epoch model on 2 CPU cores trains for an hour or more). While a
trained model fits, :class:`EpochCheckpoint` writes ``<output>/resume/<category>/<model>.ckpt``
atomically after every epoch: Lightning's full training state (weights, optimizers, epoch) plus the
training seconds spent so far. Next to it, ``<model>.json`` holds the pair's fingerprint (model,
settings, model arguments). :meth:`TrainingResume.checkpoint` returns the checkpoint only when the
fingerprint is the current one, so a training is never continued with other settings; a stale one is
deleted. The files are removed once the pair is finished.

Training time survives the interruption: the seconds stored in the checkpoint plus the seconds of the
resumed fit. Time spent on an epoch that was cut off is not counted (that epoch is trained again).

Example:
    >>> import tempfile
    >>> resume = TrainingResume(Path(tempfile.mkdtemp()) / "AE", {"model": "AE", "epochs": 50})
    >>> resume.checkpoint() is None  # nothing to resume yet
    True

"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

__all__ = ["EpochCheckpoint", "TrainingResume"]


class EpochCheckpoint(Callback):
    """Save the full training state after every training epoch, with the training seconds so far.

    Args:
        path: Checkpoint file, replaced atomically after each epoch.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.previous_seconds = 0.0  # restored from the checkpoint when a fit resumes
        self._start: float | None = None

    @property
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint."""
        return "leaderboard_epoch_checkpoint"

    @property
    def train_seconds(self) -> float:
        """Training seconds of this pair: earlier fits (before an interruption) plus the current one."""
        running = time.perf_counter() - self._start if self._start is not None else 0.0
        return self.previous_seconds + running

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the clock (the checkpoint's state is already restored when the fit resumes)."""
        del trainer, pl_module
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the checkpoint: to a temporary file, then renamed over the last one."""
        del pl_module
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        trainer.save_checkpoint(temporary)
        os.replace(temporary, self.path)

    def state_dict(self) -> dict[str, Any]:
        """The training seconds up to this checkpoint."""
        return {"train_seconds": self.train_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take the training seconds of the interrupted fits."""
        self.previous_seconds = float(state_dict.get("train_seconds", 0.0))


class TrainingResume:
    """The resume files of one pair: its last-epoch checkpoint and the fingerprint it belongs to.

    Args:
        stem: Path without suffix; ``<stem>.ckpt`` and ``<stem>.json`` are used.
        fingerprint: What defines the training (model, settings, model arguments); JSON-serialisable.
    """

    def __init__(self, stem: Path, fingerprint: dict[str, Any]) -> None:
        self.checkpoint_path = stem.with_suffix(".ckpt")
        self.fingerprint_path = stem.with_suffix(".json")
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))  # as it reads back from disk
        self.callback = EpochCheckpoint(self.checkpoint_path)
        self.stale_reason = ""

    def checkpoint(self) -> Path | None:
        """The checkpoint to resume from, or ``None`` (nothing there, or left by other settings: deleted).

        After a call that found a checkpoint of other settings, :attr:`stale_reason` says what differed.
        """
        if not self.checkpoint_path.is_file():
            return None
        stored = json.loads(self.fingerprint_path.read_text()) if self.fingerprint_path.is_file() else None
        if stored == self.fingerprint:
            return self.checkpoint_path
        if stored is None:
            self.stale_reason = f"{self.fingerprint_path.name} is missing"
        else:
            keys = sorted(k for k in {*stored, *self.fingerprint} if stored.get(k) != self.fingerprint.get(k))
            self.stale_reason = f"it was trained with other {', '.join(keys)}"
        self.clear()
        return None

    def start(self) -> None:
        """Record the fingerprint before the first checkpoint is written."""
        self.fingerprint_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.fingerprint_path.with_name(f".{self.fingerprint_path.name}.tmp")
        temporary.write_text(json.dumps(self.fingerprint, indent=1, sort_keys=True))
        os.replace(temporary, self.fingerprint_path)

    def clear(self) -> None:
        """Delete the resume files (the pair finished, or they belong to other settings)."""
        self.checkpoint_path.unlink(missing_ok=True)
        self.fingerprint_path.unlink(missing_ok=True)
        parent = self.checkpoint_path.parent
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
