"""The leaderboard's contestants: how each model is built, and the settings they share.

Every contestant is an anomalib model built with the same evaluator (see ``measure``) and no
visualizer. DivideAssemble's variants take their arguments from the shipped config
(``configs/divide_assemble.yaml``); PaDiM and PatchCore run on untrained backbones unless a local
weights file is given for their backbone, because ImageNet weights cannot be downloaded offline.

Example:
    >>> [spec.name for spec in MODELS.values()]
    ['DAAD', 'DAAD+', 'AE', 'PaDiM', 'PatchCore', 'GANomaly']
    >>> resolve_models(["padim", "daad+"])
    ['PaDiM', 'DAAD', 'DAAD+']

"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from anomalib.models import AnomalibModule

__all__ = [
    "DEFAULT_CONFIG",
    "MODELS",
    "BackboneWeightsError",
    "DivideAssembleConfig",
    "LeaderboardSettings",
    "ModelSpec",
    "UnknownModelError",
    "build_model",
    "resolve_models",
]

DEFAULT_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "divide_assemble.yaml"
PADIM_BACKBONE = "resnet18"
PATCHCORE_BACKBONE = "wide_resnet50_2"
PATCHCORE_CORESET_RATIO = 0.1  # anomalib's default
OTHER_TRAIN_BATCH_SIZE = 32  # anomalib's datamodule default, used for every model but DivideAssemble


class UnknownModelError(ValueError):
    """A model name that the leaderboard does not know."""


class BackboneWeightsError(ValueError):
    """A local backbone weights file that does not fit the backbone."""


@dataclass(frozen=True)
class DivideAssembleConfig:
    """What the leaderboard takes from a DivideAssemble config file.

    Args:
        init_args: ``model.init_args`` of the config.
        max_epochs: ``trainer.max_epochs``.
        train_batch_size: ``data.init_args.train_batch_size``.
        eval_batch_size: ``data.init_args.eval_batch_size``.
        seed: ``seed_everything``.
        path: The file it was read from (``None``: the model's own defaults).
    """

    init_args: dict[str, Any] = field(default_factory=dict)
    max_epochs: int = 50
    train_batch_size: int = 8
    eval_batch_size: int = 16
    seed: int = 42
    path: Path | None = None

    @classmethod
    def load(cls, path: Path | None) -> DivideAssembleConfig:
        """Read a config in the shipped format; ``None`` gives the model's defaults.

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            ValueError: If it is not a DivideAssemble config.
        """
        if path is None:
            return cls()
        if not path.is_file():
            msg = (
                f"DivideAssemble config '{path}' does not exist; "
                "pass --daad-config with the shipped configs/divide_assemble.yaml."
            )
            raise FileNotFoundError(msg)
        config = yaml.safe_load(path.read_text()) or {}
        model = config.get("model", {})
        if "DivideAssemble" not in str(model.get("class_path", "")):
            msg = f"'{path}' is not a DivideAssemble config (model.class_path is {model.get('class_path')!r})."
            raise ValueError(msg)
        data = config.get("data", {}).get("init_args", {})
        return cls(
            init_args=dict(model.get("init_args", {})),
            max_epochs=int(config.get("trainer", {}).get("max_epochs", cls.max_epochs)),
            train_batch_size=int(data.get("train_batch_size", cls.train_batch_size)),
            eval_batch_size=int(data.get("eval_batch_size", cls.eval_batch_size)),
            seed=int(config.get("seed_everything", cls.seed)),
            path=path,
        )


@dataclass(frozen=True)
class LeaderboardSettings:
    """Settings shared by every pair of a run.

    Args:
        daad: The DivideAssemble config.
        max_epochs: Training epochs of every trained model; ``None`` uses the config's.
        model_epochs: Training epochs of single models, overriding ``max_epochs``.
        latent_weight: ``latent_weight`` of DAAD+ (the DAAD network re-scored).
        backbone_weights: Local weights file per timm backbone name.
        patchcore_coreset_ratio: PatchCore's coreset sampling ratio.
        num_workers: Data-loading workers.
    """

    daad: DivideAssembleConfig = field(default_factory=DivideAssembleConfig)
    max_epochs: int | None = None
    model_epochs: dict[str, int] = field(default_factory=dict)
    latent_weight: float = 0.001
    backbone_weights: dict[str, Path] = field(default_factory=dict)
    patchcore_coreset_ratio: float = PATCHCORE_CORESET_RATIO
    num_workers: int = 0

    def epochs(self, model: str) -> int:
        """Training epochs of ``model``."""
        if model in self.model_epochs:
            return self.model_epochs[model]
        return self.max_epochs if self.max_epochs is not None else self.daad.max_epochs


@dataclass(frozen=True)
class ModelSpec:
    """One contestant.

    Args:
        name: Leaderboard name.
        description: What it is, for the table's notes.
        build: Builds the model from the settings and the evaluator.
        trained: Whether it trains for ``epochs`` (PaDiM and PatchCore fit in one pass).
        rescores: Name of the model whose trained network it re-scores instead of training.
        backbone: timm backbone name, for models that use a pre-trained backbone.
    """

    name: str
    description: str
    build: Callable[[LeaderboardSettings, Any], AnomalibModule]
    trained: bool = True
    rescores: str | None = None
    backbone: str | None = None

    def settings_of(self, settings: LeaderboardSettings) -> dict[str, Any]:
        """The settings that define this model's result (stored with it, shown in the table)."""
        described: dict[str, Any] = {}
        if self.trained:
            described["epochs"] = settings.epochs(self.rescores or self.name)
            described["train_batch_size"] = (
                settings.daad.train_batch_size if self.name in {"DAAD", "DAAD+", "AE"} else OTHER_TRAIN_BATCH_SIZE
            )
        if self.name in {"DAAD", "DAAD+", "AE"}:
            described["config"] = str(settings.daad.path) if settings.daad.path else "model defaults"
        if self.name == "DAAD+":
            described["latent_weight"] = settings.latent_weight
        if self.backbone is not None:
            weights = settings.backbone_weights.get(self.backbone)
            described["backbone"] = self.backbone
            described["backbone_weights"] = str(weights) if weights else "untrained (random init)"
        if self.name == "PatchCore":
            described["coreset_sampling_ratio"] = settings.patchcore_coreset_ratio
        return described


def _divide_assemble(**overrides: Any) -> Callable[[LeaderboardSettings, Any], AnomalibModule]:  # noqa: ANN401
    def build(settings: LeaderboardSettings, evaluator: Any) -> AnomalibModule:  # noqa: ANN401
        from ..models import DivideAssemble  # noqa: PLC0415

        arguments = {**settings.daad.init_args, **overrides}
        return DivideAssemble(**arguments, evaluator=evaluator, visualizer=False)

    return build


def _load_backbone_weights(model: AnomalibModule, backbone: str, path: Path) -> None:
    """Load a local timm checkpoint into the model's backbone; every backbone weight must be in it.

    Raises:
        BackboneWeightsError: If the file is missing or lacks weights of the backbone.
    """
    from timm.models import load_state_dict  # noqa: PLC0415

    if not path.is_file():
        msg = f"Backbone weights file '{path}' for {backbone} does not exist."
        raise BackboneWeightsError(msg)
    network = model.model.feature_extractor.feature_extractor
    state = load_state_dict(str(path))
    missing = network.load_state_dict(state, strict=False).missing_keys
    if missing:
        msg = (
            f"'{path}' does not hold {backbone} weights: {len(missing)} backbone tensors are missing "
            f"(first: {', '.join(missing[:3])}). Pass a timm or torchvision {backbone} checkpoint."
        )
        raise BackboneWeightsError(msg)


def _padim(settings: LeaderboardSettings, evaluator: Any) -> AnomalibModule:  # noqa: ANN401
    from anomalib.models import Padim  # noqa: PLC0415

    model = Padim(backbone=PADIM_BACKBONE, pre_trained=False, evaluator=evaluator, visualizer=False)
    if PADIM_BACKBONE in settings.backbone_weights:
        _load_backbone_weights(model, PADIM_BACKBONE, settings.backbone_weights[PADIM_BACKBONE])
    return model


def _patchcore(settings: LeaderboardSettings, evaluator: Any) -> AnomalibModule:  # noqa: ANN401
    from anomalib.models import Patchcore  # noqa: PLC0415

    model = Patchcore(
        backbone=PATCHCORE_BACKBONE,
        pre_trained=False,
        coreset_sampling_ratio=settings.patchcore_coreset_ratio,
        evaluator=evaluator,
        visualizer=False,
    )
    if PATCHCORE_BACKBONE in settings.backbone_weights:
        _load_backbone_weights(model, PATCHCORE_BACKBONE, settings.backbone_weights[PATCHCORE_BACKBONE])
    return model


def _ganomaly(settings: LeaderboardSettings, evaluator: Any) -> AnomalibModule:  # noqa: ANN401
    del settings
    from anomalib.models import Ganomaly  # noqa: PLC0415

    return Ganomaly(batch_size=OTHER_TRAIN_BATCH_SIZE, evaluator=evaluator, visualizer=False)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("DAAD", "DivideAssemble, block memories, reconstruction error", _divide_assemble(latent_weight=0.0)),
        ModelSpec(
            "DAAD+",
            "the DAAD network re-scored with the discriminator's latent error",
            _divide_assemble(),
            rescores="DAAD",
        ),
        ModelSpec("AE", "vanilla autoencoder: DivideAssemble, use_memory false", _divide_assemble(use_memory=False)),
        ModelSpec("PaDiM", "anomalib Padim", _padim, trained=False, backbone=PADIM_BACKBONE),
        ModelSpec("PatchCore", "anomalib Patchcore", _patchcore, trained=False, backbone=PATCHCORE_BACKBONE),
        ModelSpec("GANomaly", "anomalib Ganomaly (adversarial, from scratch)", _ganomaly),
    )
}


def resolve_models(names: Sequence[str]) -> list[str]:
    """Canonical model names in the given order; a re-scoring model brings the model it re-scores.

    Args:
        names: Model names, any letter case; the run follows their order.

    Returns:
        Canonical names, each once, every re-scored model before the model re-scoring it.

    Raises:
        UnknownModelError: Naming the unknown model and listing the known ones.
    """
    by_lower = {name.lower(): name for name in MODELS}
    wanted = []
    for name in names:
        if name.lower() not in by_lower:
            msg = f"Unknown model '{name}'. Known models: {', '.join(MODELS)}."
            raise UnknownModelError(msg)
        canonical = by_lower[name.lower()]
        base = MODELS[canonical].rescores
        wanted.extend([base, canonical] if base else [canonical])
    return list(dict.fromkeys(wanted))


def build_model(name: str, settings: LeaderboardSettings, evaluator: Any) -> AnomalibModule:  # noqa: ANN401
    """Build a contestant with the given evaluator."""
    return MODELS[name].build(settings, evaluator)
