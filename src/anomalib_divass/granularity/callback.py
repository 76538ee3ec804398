"""Choose ``DivideAssemble``'s block sizes before training, outside the model: the ``ChooseGranularity`` callback.

``DivideAssemble(granularity="auto")`` builds no network; something outside it must choose the block
sizes and call ``model.set_granularity``. :class:`ChooseGranularity` does it in its ``setup`` hook, which
Lightning runs after the datamodule's ``setup`` and before the model's ``setup``, ``configure_model``,
``configure_optimizers`` and the move to the device (``Trainer._run`` / ``_call_setup_hook`` in
Lightning 2.6). It holds out a fifth of the datamodule's normal training images (already resized to the
model's input by the datamodule), trains every candidate for ``epochs`` in a plain loop on the
trainer's device (:func:`~.evaluation.train_setting`: no nested ``Engine``, the process is not reseeded),
judges them on synthetic defects pasted on the held-out fifth (:func:`~.auto.auto_granularity`) and
builds the network of the winner. The test split is never read. Under several processes (DDP),
process 0 chooses once and broadcasts ``(block sizes, reason)``; every process builds the same network.
The checkpoint records the block sizes (``hparams["granularity"]``) and the reason
(``granularity_choice``); loading it adopts them.

Command line: ``anomalib train --model DivideAssemble --model.granularity auto ...`` (or ``fit``, or
``anomalib-divass``) adds the callback by itself (:func:`install_cli_choice`, applied by both entry points).
Its arguments are set by naming it among the trainer's callbacks, which then is used instead (one command)::

    anomalib train --model DivideAssemble --model.granularity auto --data MVTec --data.category bottle
        --trainer.callbacks+=anomalib_divass.granularity.ChooseGranularity
        --trainer.callbacks.epochs 3 --trainer.callbacks.block_sizes '[8,32,whole]'

Under DDP the other processes wait for process 0 in a broadcast, which times out after the process
group's timeout (30 min by default in Lightning): give a longer one (``DDPStrategy(timeout=...)``) for a
long choice, or choose first with ``anomalib-divass granularity choose`` and pass the block sizes.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_divass import DivideAssemble, MVTec
    >>> from anomalib_divass.granularity import ChooseGranularity
    >>> choose = ChooseGranularity(epochs=10, block_sizes=[8, 32, "whole"])
    >>> model = DivideAssemble(granularity="auto")
    >>> engine = Engine(max_epochs=50, callbacks=[choose])
    >>> engine.fit(model, datamodule=MVTec(root="datasets/MVTecAD", category="bottle"))  # doctest: +SKIP
    >>> model.hparams["granularity"]  # recorded in the checkpoint; choose.choice has the ranking  # doctest: +SKIP
    [64, 32, 16, 8, 4]

"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from anomalib.data.datasets.base.image import AnomalibDataset
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from ..models import DivideAssemble
from ..models.divide_assemble.lightning_model import DEFAULT_GRANULARITY
from ..models.divide_assemble.torch_model import input_size_multiple
from ..models.divide_assemble.variants import Variant
from .auto import (
    DEFAULT_AUTO_BLOCK_SIZES,
    DEFAULT_AUTO_EPOCHS,
    DEFAULT_CRITERION,
    GranularityChoice,
    auto_granularity,
    candidate_settings,
    check_criterion,
)
from .evaluation import DEFAULT_BATCH_SIZE, model_defaults
from .settings import GranularitySetting, parse_block_size
from .synthetic import DEFAULT_HOLDOUT

if TYPE_CHECKING:
    from anomalib.cli.cli import AnomalibCLI

__all__ = ["ChooseGranularity", "add_cli_choice", "install_cli_choice", "needs_choice"]

logger = logging.getLogger(__name__)

FIT_SUBCOMMANDS = frozenset({"fit", "train"})  # the anomalib subcommands that train
BLOCK_MEMORY_VARIANTS = frozenset({Variant.DAAD, Variant.DAAD_PLUS})  # the variants whose block sizes matter
_INSTALLED = "_anomalib_divass_chooses_granularity"


def needs_choice(model: object) -> bool:
    """Whether ``model`` is a ``DivideAssemble`` whose block sizes are still to be chosen (``granularity="auto"``).

    Example:
        >>> needs_choice(DivideAssemble(granularity="auto", pre_processor=False))
        True
        >>> needs_choice(DivideAssemble(granularity=[2, 1], channels=[8, 16], pre_processor=False))
        False

    """
    return isinstance(model, DivideAssemble) and model.granularity is None


class ChooseGranularity(Callback):
    """Choose the block sizes of a ``DivideAssemble(granularity="auto")`` from its training images, then build it.

    Acts in ``setup`` of ``fit`` only, and only on a ``DivideAssemble`` whose ``granularity`` is ``None``;
    otherwise it does nothing, so it may stay in a trainer's callbacks. The other model arguments
    (``channels``, ``num_items``, ``variant``, ``latent_weight``, the loss weights, ``lr`` ...) are read from
    the model's ``hparams``, so every candidate is the network that will be trained, with another
    granularity; ``variant="DAAD+"`` judges the DAAD+ map. The variants without block memories (``AE``,
    ``AE+Skip``, ``MemAE``) get the default block sizes (or ones where it does not fit) without training.

    Args:
        epochs: Training epochs of every candidate.
        block_sizes: Uniform block sides tried at every scale (powers of two and/or ``"whole"``, one block per
            map), plus the model's default granularity when it fits (see :func:`~.auto.candidate_settings`).
        holdout: Fraction of the normal training images held out for the synthetic defects.
        criterion: How candidates are ranked, a key of :data:`~.auto.CRITERIA`.
        seed: Seed of the split, the synthetic defects and the candidates' trainings (the process's own
            random state is left as it was).

    Attributes:
        choice: The :class:`~.auto.GranularityChoice` with the ranking of every candidate, on the process
            that chose (process 0); ``None`` before, and on the other processes.

    Raises:
        ValueError: For ``epochs < 1``, a block size that is neither a power of two nor ``"whole"``, a
            ``holdout`` outside ``(0, 1)``, or an unknown criterion.

    Example:
        >>> callback = ChooseGranularity(epochs=1, block_sizes=["whole", 4])
        >>> callback.epochs, callback.block_sizes
        (1, ('whole', 4))
        >>> [s.granularity for s in callback.candidates(image_size=(64, 64), num_scales=2)]
        [(32, 16), (4, 4)]

    """

    def __init__(
        self,
        epochs: int = DEFAULT_AUTO_EPOCHS,
        block_sizes: Sequence[int | str] = DEFAULT_AUTO_BLOCK_SIZES,
        holdout: float = DEFAULT_HOLDOUT,
        criterion: str = DEFAULT_CRITERION,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if int(epochs) < 1:
            msg = f"ChooseGranularity needs epochs >= 1 (training epochs of every candidate), got {epochs}."
            raise ValueError(msg)
        check_criterion(criterion)
        self.epochs = int(epochs)
        self.block_sizes = tuple(parse_block_size(size) for size in block_sizes)
        if not self.block_sizes:
            msg = "ChooseGranularity needs at least one block size to try."
            raise ValueError(msg)
        if not 0 < holdout < 1:
            msg = f"ChooseGranularity needs holdout in (0, 1) (the fraction held out), got {holdout}."
            raise ValueError(msg)
        self.holdout = holdout
        self.criterion = criterion
        self.seed = seed
        self.choice: GranularityChoice | None = None

    def candidates(self, image_size: Sequence[int], num_scales: int) -> list[GranularitySetting]:
        """The settings that would be trained for a model input of ``image_size`` with ``num_scales`` scales."""
        return candidate_settings(self.block_sizes, image_size, num_scales)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Choose and build the granularity before ``fit`` (process 0 chooses; every process builds).

        Args:
            trainer: The trainer; its datamodule's ``train_data`` is read.
            pl_module: The model; acted on only if :func:`needs_choice`.
            stage: The trainer's stage; only ``"fit"`` chooses.

        Raises:
            ValueError: If there is no datamodule with training images.
            RuntimeError: On the other processes, when process 0 failed to choose (it raises its own error).

        """
        if stage != TrainerFn.FITTING or not needs_choice(pl_module):
            return
        outcome: tuple[list[int], str] | str | None = None
        if trainer.is_global_zero:
            try:
                outcome = self._outcome(trainer, pl_module)
            except Exception as error:
                trainer.strategy.broadcast(f"{type(error).__name__}: {error}", src=0)  # the others stop too
                raise
        outcome = trainer.strategy.broadcast(outcome, src=0)
        if isinstance(outcome, str):
            msg = f"Process 0 could not choose the granularity: {outcome}"
            raise RuntimeError(msg)
        granularity, reason = outcome
        pl_module.set_granularity(granularity, reason)

    def _outcome(self, trainer: pl.Trainer, pl_module: DivideAssemble) -> tuple[list[int], str]:
        """``(block sizes, reason)``: chosen by :meth:`choose`, or, for a variant without block memories, fixed."""
        arguments = model_arguments(pl_module)
        variant = Variant(arguments["variant"])
        if variant in BLOCK_MEMORY_VARIANTS:
            self.choice = self.choose(trainer, pl_module)
            return list(self.choice.granularity), self.choice.reason
        # AE and AE+Skip have no memory, MemAE one pixel-wise memory: their block sizes change nothing.
        image_size = _image_size(pl_module, _training_images(trainer))
        num_scales = len(arguments["channels"])
        fits = len(DEFAULT_GRANULARITY) == num_scales and not any(
            side % input_size_multiple(DEFAULT_GRANULARITY) for side in image_size
        )
        granularity = list(DEFAULT_GRANULARITY) if fits else [1] * num_scales
        reason = (
            f"granularity {granularity} set without a choice: variant {variant.value} has no block memories, so "
            "its block sizes change nothing."
        )
        logger.warning("Automatic granularity: %s", reason)
        return granularity, reason

    def choose(self, trainer: pl.Trainer, pl_module: DivideAssemble) -> GranularityChoice:
        """Train and judge the candidates on this process, from ``trainer.datamodule.train_data``.

        Args:
            trainer: The trainer (its datamodule, set up, and its device).
            pl_module: The model whose ``hparams`` give the other arguments of every candidate.

        Returns:
            The choice.

        Raises:
            ValueError: If there is no datamodule with training images.

        """
        train_data = _training_images(trainer)
        image_size = _image_size(pl_module, train_data)
        arguments = model_arguments(pl_module)
        candidates = self.candidates(image_size, len(arguments["channels"]))
        heldout = round(len(train_data) * self.holdout)
        logger.info(
            "Choosing the granularity: %d candidates (%s), %d epochs each on %d normal training images; %d more "
            "held out for synthetic defects.",
            len(candidates),
            ", ".join(setting.name for setting in candidates),
            self.epochs,
            len(train_data) - heldout,
            heldout,
        )
        datamodule = trainer.datamodule
        choice = auto_granularity(
            train_data,
            image_size,
            epochs=self.epochs,
            model_arguments={**arguments, "pre_processor": False},  # the datamodule already resizes
            block_sizes=self.block_sizes,
            holdout=self.holdout,
            seed=self.seed,
            criterion=self.criterion,
            batch_size=int(getattr(datamodule, "train_batch_size", DEFAULT_BATCH_SIZE)),
            num_workers=int(getattr(datamodule, "num_workers", 0)),
            device=trainer.strategy.root_device,
        )
        logger.warning("Automatic granularity: %s", choice.reason)
        return choice


def _training_images(trainer: pl.Trainer) -> AnomalibDataset:
    """The datamodule's normal training images (its ``setup`` ran before the callbacks').

    Raises:
        ValueError: If there is no anomalib datamodule.

    """
    train_data = getattr(trainer.datamodule, "train_data", None)
    if train_data is None:
        msg = (
            "granularity 'auto' is chosen from the datamodule's normal training images, but this run has no "
            "anomalib datamodule: pass one (--data, or Engine.fit(datamodule=...)), or give the block sizes "
            "(--model.granularity [32,16,8,4,2]; `anomalib-divass granularity choose` finds them)."
        )
        raise ValueError(msg)
    return train_data


def _image_size(model: DivideAssemble, train_data: AnomalibDataset) -> tuple[int, ...]:
    """The model's input size; without a resizing pre-processor, that of the first training image."""
    # The datamodule's setup appended the model's resize to the images' augmentations.
    size = model.input_size
    return tuple(int(side) for side in (size if size is not None else train_data[0].image.shape[-2:]))


def model_arguments(model: DivideAssemble) -> dict[str, Any]:
    """The model's constructor arguments from its ``hparams``, granularity and anomalib components left out.

    Example:
        >>> arguments = model_arguments(DivideAssemble(granularity="auto", channels=[8, 16], pre_processor=False))
        >>> arguments["channels"], "granularity" in arguments
        ([8, 16], False)

    """
    return {name: model.hparams[name] for name in model_defaults() if name in model.hparams and name != "granularity"}


def add_cli_choice(cli: AnomalibCLI) -> bool:
    """Append :class:`ChooseGranularity` to the trainer callbacks of an ``AnomalibCLI`` about to build its ``Engine``.

    Acts for the training subcommands (``fit``, ``train``) when the instantiated model :func:`needs_choice`
    and no ``ChooseGranularity`` is among the callbacks yet (one given with ``--trainer.callbacks`` is kept
    as it is), so calling it again adds nothing.

    Args:
        cli: The command line, after its classes are instantiated (``config_init``).

    Returns:
        Whether a callback was added.

    """
    if cli.subcommand not in FIT_SUBCOMMANDS or not needs_choice(cli._get(cli.config_init, "model")):
        return False
    trainer = cli._get(cli.config_init, "trainer")  # anomalib's accessor of the subcommand's config
    if trainer is None:
        return False
    callbacks = trainer.get("callbacks")
    callbacks = [] if callbacks is None else list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]
    if any(isinstance(callback, ChooseGranularity) for callback in callbacks):
        return False
    trainer["callbacks"] = [*callbacks, ChooseGranularity()]
    return True


def install_cli_choice() -> None:
    """Make anomalib's command line add :class:`ChooseGranularity` for ``--model.granularity auto``.

    Wraps ``AnomalibCLI.instantiate_engine`` so that :func:`add_cli_choice` runs just before the
    ``Engine`` is built from the trainer's arguments. Installing twice wraps once. Both entry points
    (``anomalib`` through the ``.pth`` hook, and ``anomalib-divass``) call it in
    :func:`anomalib_divass.cli.prepare_anomalib_cli`; nothing happens on import.
    """
    from anomalib.cli.cli import AnomalibCLI  # noqa: PLC0415  (importing it runs the plugin's hook)

    current = AnomalibCLI.instantiate_engine
    if getattr(current, _INSTALLED, False):
        return

    @functools.wraps(current)
    def instantiate_engine(self: AnomalibCLI) -> None:
        add_cli_choice(self)
        current(self)

    setattr(instantiate_engine, _INSTALLED, True)
    AnomalibCLI.instantiate_engine = instantiate_engine
