"""Train and test every (model, category) pair with anomalib's ``Engine``; store each result at once.

Each finished pair is written atomically to ``<output>/pairs/<category>/<model>.json`` (status
``ok`` or ``failed``, metrics, timings, ROC curve, settings). A run that is started again skips
every pair stored as ``ok``, so an interrupted run resumes where it stopped without retraining;
failed pairs are tried again. One failing pair is recorded and the run goes on.

DAAD+ is not trained: it is the trained DAAD network (its checkpoint, kept in
``<output>/checkpoints/<category>/DAAD.ckpt``) scored with the discriminator's latent error.
anomalib's ``Engine`` validates it first, so that the post-processor learns thresholds and
normalisation for the DAAD+ map, then tests it. Its training time is DAAD's.

A pair cut off while training resumes from its last finished epoch (``resume``): the full
training state is kept in ``<output>/resume/`` after every epoch and used again only by the same
model with the same settings.

Trained models validate once, after the last epoch (the post-processor's thresholds need it);
the tested weights are those of the last epoch, never a checkpoint picked on the test set.

Example:
    >>> categories = [Category(Path("data/bottle"))]
    >>> categories[0].name
    'bottle'

"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.mvtec import DatasetNotFoundError, check_category_folder
from .measure import CurveAUROC, EpochProgress, InferenceTimer, format_seconds, leaderboard_evaluator, model_size_mb
from .models import MODELS, LeaderboardSettings, build_model
from .resume import TrainingResume

__all__ = ["Category", "PairResult", "ResultStore", "check_categories", "run_pairs"]

METRICS = ("image_AUROC", "pixel_AUROC", "image_F1Score", "pixel_F1Score", "pixel_AUPRO")


@dataclass(frozen=True)
class Category:
    """A category folder in MVTec AD layout; its parent is the datamodule's root."""

    folder: Path

    @property
    def name(self) -> str:
        """The category name (the folder's name)."""
        return self.folder.name

    @property
    def root(self) -> Path:
        """The dataset root (the folder's parent)."""
        return self.folder.parent

    def num_train_images(self) -> int:
        """Normal training images."""
        return sum(1 for p in (self.folder / "train" / "good").iterdir() if p.suffix.lower() == ".png")


def check_categories(root: Path | None, names: Sequence[str]) -> list[Category]:
    """Resolve category names (under ``root``) or category folders, and check their MVTec layout.

    Args:
        root: Dataset root for category names; ``None`` if every entry is a folder.
        names: Category names under ``root``, or paths of category folders.

    Returns:
        The categories, in the given order.

    Raises:
        DatasetNotFoundError: Naming the category, what is missing and how to fix it.
    """
    if root is not None and not root.is_dir():
        msg = f"Dataset root '{root}' does not exist; pass --root with the folder that holds the category folders."
        raise DatasetNotFoundError(msg)
    categories = []
    for name in names:
        if root is not None and (root / name).is_dir():
            path = root / name
        elif Path(name).is_dir() or root is None:
            path = Path(name)
        else:
            path = root / name
        try:
            check_category_folder(path.parent, path.name)
        except DatasetNotFoundError as error:  # name this command's flags, not anomalib's
            message = str(error).replace("--data.root", "--root").replace("--data.category", "--categories")
            raise DatasetNotFoundError(message) from None
        test = path / "test"
        defects = [p.name for p in test.iterdir() if p.is_dir() and p.name != "good"] if test.is_dir() else []
        if not defects:
            msg = (
                f"'{path}' has no anomalous test images: expected folders test/<defect> (and ground_truth/<defect> "
                f"masks) next to test/good, as in MVTec AD. The leaderboard needs them to measure anything."
            )
            raise DatasetNotFoundError(msg)
        categories.append(Category(path))
    return categories


@dataclass
class PairResult:
    """The stored result of one (model, category) pair."""

    model: str
    category: str
    status: str  # "ok" or "failed"
    metrics: dict[str, float | None] = field(default_factory=dict)
    train_seconds: float | None = None
    test_seconds: float | None = None
    images_per_second: float | None = None
    model_size_mb: float | None = None
    threads: int = 1
    settings: dict[str, Any] = field(default_factory=dict)
    roc: tuple[list[float], list[float]] | None = None
    notes: str = ""
    error: str = ""

    @classmethod
    def from_json(cls, text: str) -> PairResult:
        """Read a stored result."""
        return cls(**json.loads(text))


class ResultStore:
    """Per-pair results and checkpoints under one output folder, written atomically.

    Args:
        output: The run's output folder.
    """

    def __init__(self, output: Path) -> None:
        self.output = output

    def pair_path(self, model: str, category: str) -> Path:
        """Where a pair's result lives."""
        return self.output / "pairs" / category / f"{model.replace('+', '_plus')}.json"

    def checkpoint_path(self, model: str, category: str) -> Path:
        """Where a trained network is kept for re-scoring."""
        return self.output / "checkpoints" / category / f"{model}.ckpt"

    def resume_stem(self, model: str, category: str) -> Path:
        """Where an unfinished training keeps its last epoch (``.ckpt``) and fingerprint (``.json``)."""
        return self.output / "resume" / category / model.replace("+", "_plus")

    def log_path(self, model: str, category: str) -> Path:
        """Where a failed pair's traceback goes."""
        return self.output / "logs" / f"{category}_{model.replace('+', '_plus')}.log"

    def load(self, model: str, category: str) -> PairResult | None:
        """The stored result, or ``None``."""
        path = self.pair_path(model, category)
        return PairResult.from_json(path.read_text()) if path.is_file() else None

    def save(self, result: PairResult) -> None:
        """Store a result atomically (write a temporary file, then rename it)."""
        path = self.pair_path(result.model, result.category)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(asdict(result), indent=1))


def write_atomic(path: Path, text_or_bytes: str | bytes) -> None:
    """Write a file so that readers see either the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(text_or_bytes, bytes):
        temporary.write_bytes(text_or_bytes)
    else:
        temporary.write_text(text_or_bytes)
    os.replace(temporary, path)


def _datamodule(name: str, category: Category, settings: LeaderboardSettings) -> Any:  # noqa: ANN401
    from ..data import MVTec  # noqa: PLC0415

    spec = MODELS[name]
    return MVTec(
        root=category.root,
        category=category.name,
        train_batch_size=spec.settings_of(settings).get("train_batch_size", settings.daad.train_batch_size),
        eval_batch_size=settings.daad.eval_batch_size,
        num_workers=settings.num_workers,
    )


def _engine(store: ResultStore, name: str, category: Category, callbacks: list, epochs: int | None) -> Any:  # noqa: ANN401
    from anomalib.engine import Engine  # noqa: PLC0415

    extra = {"max_epochs": epochs, "check_val_every_n_epoch": epochs} if epochs else {}
    return Engine(
        default_root_dir=store.output / "work" / category.name / name.replace("+", "_plus"),
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        accelerator="cpu",
        devices=1,
        **extra,
    )


def _metrics(values: dict[str, Any]) -> dict[str, float | None]:
    return {name: (float(values[name]) if values.get(name) is not None else None) for name in METRICS}


def _test(
    engine: Any,  # noqa: ANN401
    model: Any,  # noqa: ANN401
    datamodule: Any,  # noqa: ANN401
    roc: CurveAUROC,
    timer: InferenceTimer,
    name: str,
    category: str,
) -> PairResult:
    """Test a fitted (or validated) model; the result of the pair without training time and settings."""
    start = time.perf_counter()
    (values,) = engine.test(model, datamodule=datamodule)
    return PairResult(
        model=name,
        category=category,
        status="ok",
        metrics=_metrics(values),
        test_seconds=time.perf_counter() - start,
        images_per_second=timer.images_per_second,
        model_size_mb=model_size_mb(model.model),
        threads=torch.get_num_threads(),
        roc=roc.curve,
    )


def _training_resume(
    name: str, category: Category, settings: LeaderboardSettings, store: ResultStore
) -> TrainingResume:
    """The resume files of a trained model, fingerprinted by everything that defines its training."""
    fingerprint = {
        "model": name,
        "category": str(category.folder.resolve()),
        "settings": MODELS[name].settings_of(settings),
        "model_arguments": settings.daad.init_args if MODELS[name].ours else {},
        "seed": settings.daad.seed,
    }
    return TrainingResume(store.resume_stem(name, category.name), fingerprint)


def _train_and_test(
    name: str, category: Category, settings: LeaderboardSettings, store: ResultStore, log: Callable[[str], None]
) -> PairResult:
    from lightning.pytorch import seed_everything  # noqa: PLC0415

    spec = MODELS[name]
    seed_everything(settings.daad.seed, workers=True)
    evaluator, roc = leaderboard_evaluator()
    model = build_model(name, settings, evaluator)
    timer = InferenceTimer()
    epochs = settings.epochs(name) if spec.trained else None
    callbacks = [timer, EpochProgress(f"{name} on {category.name}")]
    resume = _training_resume(name, category, settings, store) if spec.trained else None
    checkpoint = None
    if resume is not None:
        checkpoint = resume.checkpoint()
        if resume.stale_reason:
            log(f"    not resuming {name} on {category.name} from its last epoch: {resume.stale_reason}; from scratch")
        if checkpoint is not None:
            log(f"    resuming {name} on {category.name} from its last finished epoch ({checkpoint})")
        resume.start()
        callbacks.insert(0, resume.callback)  # the checkpoint is on disk before the epoch's progress line
    engine = _engine(store, name, category, callbacks, epochs)
    datamodule = _datamodule(name, category, settings)
    start = time.perf_counter()
    engine.fit(model, datamodule=datamodule, ckpt_path=checkpoint)
    earlier = resume.callback.previous_seconds if resume is not None else 0.0  # before an interruption
    train_seconds = earlier + time.perf_counter() - start
    if name == "DAAD":
        checkpoint = store.checkpoint_path(name, category.name)
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        temporary = checkpoint.with_name(f".{checkpoint.name}.tmp")
        engine.trainer.save_checkpoint(temporary)
        os.replace(temporary, checkpoint)
    result = _test(engine, model, datamodule, roc, timer, name, category.name)
    result.train_seconds, result.settings, result.notes = train_seconds, spec.settings_of(settings), spec.description
    if resume is not None:
        resume.clear()
    return result


def _rescore(
    name: str, category: Category, settings: LeaderboardSettings, store: ResultStore, log: Callable[[str], None]
) -> PairResult:
    del log
    from ..models import DivideAssemble  # noqa: PLC0415

    spec = MODELS[name]
    base = store.load(spec.rescores, category.name)
    checkpoint = store.checkpoint_path(spec.rescores, category.name)
    if base is None or base.status != "ok" or not checkpoint.is_file():
        msg = f"{name} re-scores the trained {spec.rescores} network; {spec.rescores} on {category.name} did not finish"
        raise RuntimeError(msg)
    evaluator, roc = leaderboard_evaluator()
    # The trained network, every setting of its checkpoint kept, scored as DAAD+ (the variants share their weights).
    model = DivideAssemble.load_from_checkpoint(
        checkpoint, variant="DAAD+", latent_weight=settings.latent_weight, evaluator=evaluator, visualizer=False
    )
    timer = InferenceTimer()
    engine = _engine(store, name, category, [timer], None)
    datamodule = _datamodule(name, category, settings)
    engine.validate(model, datamodule=datamodule)
    result = _test(engine, model, datamodule, roc, timer, name, category.name)
    result.train_seconds, result.settings = base.train_seconds, {**base.settings, **spec.settings_of(settings)}
    result.notes = f"{spec.description} (latent_weight {settings.latent_weight}); training time is DAAD's"
    return result


class _Clock:
    """Elapsed time of the run and an estimate of what is left, from the pairs done so far."""

    def __init__(self, pairs: Sequence[tuple[str, Category]]) -> None:
        self.start = time.perf_counter()
        self.pending = list(pairs)
        self.done: list[tuple[str, Category, float]] = []

    def finish(self, name: str, category: Category, seconds: float) -> None:
        self.pending.remove((name, category))
        self.done.append((name, category, seconds))

    def _estimate(self, name: str, category: Category) -> float | None:
        same = [(c, s) for n, c, s in self.done if n == name]
        if same:  # same model elsewhere: scale by training images
            other, seconds = same[-1]
            return seconds * category.num_train_images() / max(1, other.num_train_images())
        return None

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        estimates = [self._estimate(n, c) for n, c in self.pending]
        known = [e for e in estimates if e is not None]
        if len(known) < len(estimates):
            if not self.done:
                return f"elapsed {format_seconds(elapsed)}, remaining: unknown until a pair finishes"
            mean = sum(s for _, _, s in self.done) / len(self.done)
            known += [mean] * (len(estimates) - len(known))
        return f"elapsed {format_seconds(elapsed)}, remaining ~{format_seconds(sum(known))}"


def run_pairs(
    models: Sequence[str],
    categories: Sequence[Category],
    settings: LeaderboardSettings,
    store: ResultStore,
    log: Callable[[str], None] = print,
) -> list[PairResult]:
    """Run every pair not stored as ``ok`` yet; return all results in model-major order per category.

    Args:
        models: Canonical model names, a re-scored model before the model re-scoring it.
        categories: Checked categories.
        settings: Shared settings.
        store: Where results are stored.
        log: Where progress lines go.

    Returns:
        One result per pair (stored ones included).
    """
    pairs = [(name, category) for category in categories for name in models]
    results: dict[tuple[str, str], PairResult] = {}
    todo = []
    for name, category in pairs:
        stored = store.load(name, category.name)
        if stored is not None and stored.status == "ok":
            results[name, category.name] = stored
            wanted = MODELS[name].settings_of(settings)
            differs = {k: (v, wanted.get(k)) for k, v in stored.settings.items() if k in wanted and wanted[k] != v}
            note = f" (stored with other settings: {differs}; delete {store.pair_path(name, category.name)} to redo)"
            log(f"resume: {name} on {category.name} is finished, not retrained{note if differs else ''}")
        else:
            todo.append((name, category))
    clock = _Clock(todo)
    for index, (name, category) in enumerate(todo, start=1):
        log(f"[{index}/{len(todo)}] {name} on {category.name}: {clock.line()}")
        start = time.perf_counter()
        try:
            runner = _rescore if MODELS[name].rescores else _train_and_test
            result = runner(name, category, settings, store, log)
        except Exception as error:  # one failing pair must not stop the others
            log_file = store.log_path(name, category.name)
            write_atomic(log_file, traceback.format_exc())
            message = f"{type(error).__name__}: {error}"
            result = PairResult(
                model=name,
                category=category.name,
                status="failed",
                error=message,
                settings=MODELS[name].settings_of(settings),
                threads=torch.get_num_threads(),
            )
            log(f"FAILED: {name} on {category.name}: {message} (traceback in {log_file}); continuing with the rest")
        store.save(result)
        results[name, category.name] = result
        seconds = time.perf_counter() - start
        clock.finish(name, category, seconds)
        if result.status == "ok":
            summary = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items() if v is not None)
            log(f"    done in {format_seconds(seconds)}: {summary}")
    return [results[name, category.name] for name, category in pairs]
