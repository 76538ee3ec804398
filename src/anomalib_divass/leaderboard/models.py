"""The leaderboard's contestants: how each model is built, and the settings they share.

Every contestant is an anomalib model built with the same evaluator (see ``measure``) and no
visualizer. DivideAssemble's variants take their arguments, epochs, batch sizes and seed from a config,
by default the one shipped in the package (``anomalib_divass/configs/divide_assemble.yaml``, what
``anomalib-divass config`` prints); each is one ``variant`` of the model, named as in the paper's table:
DAAD, DAAD+ (the DAAD network scored with the latent error too, weight ``DAAD_PLUS_LATENT_WEIGHT`` by
default), AE (no skip connections, no memory), MemAE (no skip connections, a pixel-wise memory on the
bottleneck) and AE+Skip (skip connections, no memory). Draem is anomalib's, offline: its texture folder
is an empty one, so it pastes Perlin-noise defects only. PaDiM and PatchCore
run on untrained backbones unless a local weights file is given for their backbone, because ImageNet
weights cannot be downloaded offline.

Example:
    >>> [spec.name for spec in MODELS.values()]
    ['DAAD', 'DAAD+', 'AE', 'MemAE', 'AE+Skip', 'PaDiM', 'PatchCore', 'GANomaly', 'Draem']
    >>> resolve_models(["padim", "daad+"])
    ['PaDiM', 'DAAD', 'DAAD+']

"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from anomalib.models import AnomalibModule

from ..configs import config_path
from ..models.divide_assemble.lightning_model import DAAD_PLUS_LATENT_WEIGHT, DEFAULT_MAX_EPOCHS, DivideAssemble

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

DEFAULT_CONFIG = config_path()  # the config shipped in the package
# Arguments every DivideAssemble the leaderboard builds gets from the leaderboard itself.
LEADERBOARD_ARGUMENTS = {"evaluator", "visualizer"}
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
        init_args: ``model.init_args`` of the config (the model's own defaults for the others).
        max_epochs: ``trainer.max_epochs`` (the model's ``DEFAULT_MAX_EPOCHS`` when the config has none).
        train_batch_size: ``data.init_args.train_batch_size``.
        eval_batch_size: ``data.init_args.eval_batch_size``.
        seed: ``seed_everything``.
        path: The file it was read from (``None``: built in Python, not read).
    """

    init_args: dict[str, Any] = field(default_factory=dict)
    max_epochs: int = DEFAULT_MAX_EPOCHS
    train_batch_size: int = 8
    eval_batch_size: int = 16
    seed: int = 42
    path: Path | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> DivideAssembleConfig:
        """Read a config in the shipped format; ``None`` reads the shipped config (:data:`DEFAULT_CONFIG`).

        Args:
            path: A config file (``anomalib-divass config`` prints the shipped one to start from).

        Returns:
            The settings it holds.

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            ValueError: If it is not a DivideAssemble config, or names arguments DivideAssemble does not take.
        """
        path = DEFAULT_CONFIG if path is None else Path(path)
        if not path.is_file():
            msg = (
                f"DivideAssemble config '{path}' does not exist; pass --daad-config an existing file, or leave it "
                "out for the shipped config (`anomalib-divass config > divide_assemble.yaml` writes a copy to edit)."
            )
            raise FileNotFoundError(msg)
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        model = config.get("model") or {}
        if "DivideAssemble" not in str(model.get("class_path", "")):
            msg = f"'{path}' is not a DivideAssemble config (model.class_path is {model.get('class_path')!r})."
            raise ValueError(msg)
        init_args = dict(model.get("init_args") or {})
        _check_model_arguments(init_args, path)
        data = (config.get("data") or {}).get("init_args") or {}
        return cls(
            init_args=init_args,
            max_epochs=int((config.get("trainer") or {}).get("max_epochs") or cls.max_epochs),
            train_batch_size=int(data.get("train_batch_size", cls.train_batch_size)),
            eval_batch_size=int(data.get("eval_batch_size", cls.eval_batch_size)),
            seed=int(config.get("seed_everything", cls.seed)),
            path=path,
        )


@dataclass(frozen=True)
class LeaderboardSettings:
    """Settings shared by every pair of a run.

    Args:
        daad: The DivideAssemble config (default: the shipped one).
        max_epochs: Training epochs of every trained model; ``None`` uses the config's.
        model_epochs: Training epochs of single models, overriding ``max_epochs``.
        latent_weight: ``latent_weight`` of DAAD+ (the DAAD network re-scored; default: the model's
            ``DAAD_PLUS_LATENT_WEIGHT``).
        backbone_weights: Local weights file per timm backbone name.
        patchcore_coreset_ratio: PatchCore's coreset sampling ratio.
        num_workers: Data-loading workers.
    """

    daad: DivideAssembleConfig = field(default_factory=DivideAssembleConfig.load)
    max_epochs: int | None = None
    model_epochs: dict[str, int] = field(default_factory=dict)
    latent_weight: float = DAAD_PLUS_LATENT_WEIGHT
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
        ours: Whether it is a DivideAssemble variant (it then takes the DivideAssemble config's settings).
    """

    name: str
    description: str
    build: Callable[[LeaderboardSettings, Any], AnomalibModule]
    trained: bool = True
    rescores: str | None = None
    backbone: str | None = None
    ours: bool = False

    def settings_of(self, settings: LeaderboardSettings) -> dict[str, Any]:
        """The settings that define this model's result (stored with it, shown in the table)."""
        described: dict[str, Any] = {}
        if self.trained:
            described["epochs"] = settings.epochs(self.rescores or self.name)
            described["train_batch_size"] = settings.daad.train_batch_size if self.ours else OTHER_TRAIN_BATCH_SIZE
        if self.ours:
            described["config"] = _config_name(settings.daad.path)
        if self.name == "DAAD+":
            described["latent_weight"] = settings.latent_weight
        if self.backbone is not None:
            weights = settings.backbone_weights.get(self.backbone)
            described["backbone"] = self.backbone
            described["backbone_weights"] = str(weights) if weights else "untrained (random init)"
        if self.name == "PatchCore":
            described["coreset_sampling_ratio"] = settings.patchcore_coreset_ratio
        return described


def _config_name(path: Path | None) -> str:
    """How a DivideAssemble config is named in the results: ``shipped`` for the package's own."""
    if path is None:
        return "model defaults"
    return "shipped" if path.resolve() == DEFAULT_CONFIG.resolve() else str(path)


def _check_model_arguments(init_args: dict[str, Any], path: Path) -> None:
    """Refuse ``model.init_args`` that DivideAssemble does not take, naming them and the ones it takes.

    Raises:
        ValueError: For unknown arguments (e.g. ``similarity`` or ``discriminator_lr`` of older configs).
    """
    known = set(inspect.signature(DivideAssemble).parameters) - LEADERBOARD_ARGUMENTS
    unknown = sorted(set(init_args) - known)
    if unknown:
        msg = (
            f"'{path}' gives DivideAssemble arguments it does not take: {', '.join(unknown)}. "
            f"Its arguments: {', '.join(sorted(known))} (`anomalib-divass config` prints the shipped config)."
        )
        raise ValueError(msg)


def _divide_assemble(**overrides: Any) -> Callable[[LeaderboardSettings, Any], AnomalibModule]:  # noqa: ANN401
    def build(settings: LeaderboardSettings, evaluator: Any) -> AnomalibModule:  # noqa: ANN401
        arguments = {**settings.daad.init_args, **overrides}
        if arguments.get("variant") == "DAAD+":
            arguments["latent_weight"] = settings.latent_weight
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


def _draem(settings: LeaderboardSettings, evaluator: Any) -> AnomalibModule:  # noqa: ANN401
    """Anomalib's Draem, offline: an existing empty texture folder leaves it Perlin-noise defects only.

    Draem downloads the DTD texture dataset in ``__init__`` unless ``dtd_dir`` exists; with an empty folder
    its ``PerlinAnomalyGenerator`` finds no texture images and blends Perlin noise only (read from anomalib
    2.7's ``models/image/draem`` and ``data/utils/generators/perlin.py``).
    """
    del settings
    import tempfile  # noqa: PLC0415

    from anomalib.models import Draem  # noqa: PLC0415

    empty = Path(tempfile.mkdtemp(prefix="draem_no_textures_"))
    return Draem(dtd_dir=empty, evaluator=evaluator, visualizer=False)


def _ganomaly(settings: LeaderboardSettings, evaluator: Any) -> AnomalibModule:  # noqa: ANN401
    del settings
    from anomalib.models import Ganomaly  # noqa: PLC0415

    return Ganomaly(batch_size=OTHER_TRAIN_BATCH_SIZE, evaluator=evaluator, visualizer=False)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "DAAD",
            "DivideAssemble: block memories on every skip connection",
            _divide_assemble(variant="DAAD"),
            ours=True,
        ),
        ModelSpec(
            "DAAD+",
            "the DAAD network re-scored with the discriminator's latent error",
            _divide_assemble(variant="DAAD+"),
            rescores="DAAD",
            ours=True,
        ),
        ModelSpec("AE", "the paper's AE: no skip connections, no memory", _divide_assemble(variant="AE"), ours=True),
        ModelSpec(
            "MemAE",
            "the paper's MemAE: no skip connections, pixel-wise memory on the bottleneck",
            _divide_assemble(variant="MemAE"),
            ours=True,
        ),
        ModelSpec(
            "AE+Skip",
            "the paper's AE+Skip: skip connections, no memory",
            _divide_assemble(variant="AE+Skip"),
            ours=True,
        ),
        ModelSpec("PaDiM", "anomalib Padim", _padim, trained=False, backbone=PADIM_BACKBONE),
        ModelSpec("PatchCore", "anomalib Patchcore", _patchcore, trained=False, backbone=PATCHCORE_BACKBONE),
        ModelSpec("GANomaly", "anomalib Ganomaly (adversarial, from scratch)", _ganomaly),
        ModelSpec("Draem", "anomalib Draem, offline: Perlin-noise defects only (no DTD textures)", _draem),
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
