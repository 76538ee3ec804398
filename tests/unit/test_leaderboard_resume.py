"""Resume files of a cut-off training: kept only for the same fingerprint, training seconds carried over."""

from __future__ import annotations

from pathlib import Path

from anomalib_divass.leaderboard.resume import EpochCheckpoint, TrainingResume

FINGERPRINT = {"model": "AE", "settings": {"epochs": 50, "train_batch_size": 8}, "seed": 42}


def _leave_checkpoint(stem: Path, fingerprint: dict) -> TrainingResume:
    resume = TrainingResume(stem, fingerprint)
    resume.start()
    resume.checkpoint_path.write_bytes(b"a checkpoint")
    return resume


def test_checkpoint_of_the_same_training_is_resumed(tmp_path: Path) -> None:
    _leave_checkpoint(tmp_path / "washer" / "AE", FINGERPRINT)
    resume = TrainingResume(tmp_path / "washer" / "AE", dict(FINGERPRINT))
    assert resume.checkpoint() == tmp_path / "washer" / "AE.ckpt"
    assert resume.stale_reason == ""


def test_checkpoint_of_other_settings_is_deleted_and_says_why(tmp_path: Path) -> None:
    _leave_checkpoint(tmp_path / "washer" / "AE", FINGERPRINT)
    resume = TrainingResume(tmp_path / "washer" / "AE", {**FINGERPRINT, "settings": {"epochs": 10}})
    assert resume.checkpoint() is None
    assert resume.stale_reason == "it was trained with other settings"
    assert not (tmp_path / "washer").exists()


def test_checkpoint_without_fingerprint_is_not_trusted(tmp_path: Path) -> None:
    resume = _leave_checkpoint(tmp_path / "AE", FINGERPRINT)
    resume.fingerprint_path.unlink()
    again = TrainingResume(tmp_path / "AE", FINGERPRINT)
    assert again.checkpoint() is None
    assert "AE.json is missing" in again.stale_reason
    assert not again.checkpoint_path.exists()


def test_training_seconds_add_up_over_an_interruption(tmp_path: Path) -> None:
    first = EpochCheckpoint(tmp_path / "AE.ckpt")
    first.on_fit_start(None, None)  # type: ignore[arg-type]
    first.previous_seconds = 100.0  # as if 100 s were trained before
    state = first.state_dict()
    assert state["train_seconds"] >= 100.0
    resumed = EpochCheckpoint(tmp_path / "AE.ckpt")
    resumed.load_state_dict(state)
    assert resumed.train_seconds == state["train_seconds"]  # clock not started: only the earlier fits
    resumed.on_fit_start(None, None)  # type: ignore[arg-type]
    assert resumed.train_seconds >= state["train_seconds"]
