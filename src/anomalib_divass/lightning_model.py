"""DivideAssemble: the Divide-and-Assemble anomaly detector as an anomalib model.

Hou et al., "Divide-and-Assemble: Learning Block-wise Memory for Unsupervised Anomaly
Detection", ICCV 2021 (arXiv 2107.13118). A memory autoencoder is trained on normal images
against a discriminator (two optimizers, manual optimization); every skip connection reads
a block-wise memory of normal blocks. Scoring (reconstruction error, plus the
discriminator's latent error for DAAD+) lives in the torch model, so it is exported with it;
anomalib's ``PostProcessor``, ``Evaluator`` and ``ImageVisualizer`` do the rest.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_divass import DivideAssemble, MVTec
    >>> model = DivideAssemble(granularity=[32, 16, 8, 4, 2], latent_weight=0.0)
    >>> engine = Engine(max_epochs=50)
    >>> engine.fit(model, datamodule=MVTec(root="datasets/MVTecAD"))  # doctest: +SKIP

"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import AUROC, Evaluator, F1Score
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn, optim
from torchvision.transforms.v2 import Compose, Resize

from .anomaly_map import AnomalyMapGenerator
from .deploy import DeploymentMixin
from .discriminator import Discriminator
from .distributed import RankZeroImageVisualizer, share_results_folder, use_sync_batchnorm
from .loss import DiscriminatorLoss, GeneratorLoss
from .torch_model import DivideAssembleModel, MemoryAutoencoder, check_input_size

__all__ = ["CheckpointMismatchError", "DivideAssemble", "NonFiniteLossError"]

logger = logging.getLogger(__name__)

LIGHTNING_DEFAULT_MAX_EPOCHS = 1000
AUTO = "auto"


class NonFiniteLossError(FloatingPointError):
    """A training loss or gradient became NaN or infinite."""


class CheckpointMismatchError(ValueError):
    """A checkpoint was trained with another network configuration."""


# Arguments that change the shape of the network; a checkpoint must agree on all of them.
ARCHITECTURE_ARGUMENTS = ("granularity", "channels", "num_items", "discriminator_channels", "use_memory")


class DivideAssemble(DeploymentMixin, AnomalibModule):
    """Divide-and-Assemble (DAAD / DAAD+) anomaly detection.

    Exported with anomalib's ``Engine.export`` (``anomalib export``); :class:`~anomalib_divass.deploy.DeploymentMixin`
    checks the checkpoint and the export folder first and gives ``INT8_PTQ`` a quantization that keeps quality.

    Args:
        granularity: Block side per scale in feature cells, finest scale first, one per
            entry of ``channels``. The default gives every block 64 x 64 image pixels at 256 x 256
            (a quarter of the image side at every scale). ``"auto"`` chooses it when training
            starts, from normal training images only (see :mod:`anomalib_divass.granularity.auto`);
            the checkpoint records the chosen block sizes.
        channels: Encoder channels per stride-2 scale, finest first.
        num_items: Memory items per scale.
        similarity: Memory addressing, ``"cosine"`` or ``"dot"``.
        shrink_threshold: MemAE hard-shrinkage threshold of the addressing weights.
        temperature: Softmax temperature of cosine addressing.
        use_memory: ``False`` turns every memory off: the vanilla autoencoder baseline.
        latent_weight: Weight of the discriminator-feature error in the anomaly map;
            0 gives DAAD, > 0 gives DAAD+.
        sigma: Gaussian smoothing of the anomaly map, in pixels.
        score_top_fraction: The image score is the mean of this fraction of the map's highest
            pixels (1.0: the mean of the map; 1 / (H * W): its maximum).
        discriminator_channels: Channels of the discriminator's stride-2 blocks.
        adversarial_weight: Weight of the adversarial term of the generator loss.
        reconstruction_weight: Weight of the L1 reconstruction term.
        feature_weight: Weight of the discriminator-feature (latent) term of the generator loss.
        entropy_weight: Weight of the memory addressing entropy.
        lr: Learning rate of the generator (autoencoder and memories).
        discriminator_lr: Learning rate of the discriminator.
        betas: Adam betas of both optimizers.
        default_max_epochs: Training length used when none is given (Lightning would
            otherwise train for 1000 epochs); ``--trainer.max_epochs`` always wins.
        auto_epochs: With ``granularity="auto"``: training epochs of every candidate setting.
        auto_block_sizes: With ``granularity="auto"``: the uniform block sides tried (powers of
            two, ``"whole"`` for one block per map), plus the default granularity.
        pre_processor: Pre-processor, or ``True`` for a 256 x 256 resize.
        post_processor: Post-processor, or ``True`` for anomalib's ``PostProcessor``.
        evaluator: Evaluator, or ``True`` for image and pixel AUROC and F1.
        visualizer: Visualizer, or ``True`` for anomalib's ``ImageVisualizer`` (written by process 0 only).

    Example:
        >>> model = DivideAssemble(channels=[8, 16], granularity=[2, 1], pre_processor=False)
        >>> model.model.granularity
        (2, 1)

    """

    def __init__(
        self,
        granularity: Sequence[int] | Literal["auto"] = (32, 16, 8, 4, 2),
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        num_items: int = 100,
        similarity: Literal["cosine", "dot"] = "cosine",
        shrink_threshold: float = 0.0025,
        temperature: float = 0.05,
        use_memory: bool = True,
        latent_weight: float = 0.0,
        sigma: float = 4.0,
        score_top_fraction: float = 0.01,
        discriminator_channels: Sequence[int] = (16, 32, 64, 128),
        adversarial_weight: float = 1.0,
        reconstruction_weight: float = 50.0,
        feature_weight: float = 1.0,
        entropy_weight: float = 0.0002,
        lr: float = 1e-3,
        discriminator_lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        default_max_epochs: int = 50,
        auto_epochs: int = 10,
        auto_block_sizes: Sequence[int | str] = (1, 2, 4, 8, 16, 32, "whole"),
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.auto_epochs = auto_epochs
        self.auto_block_sizes = tuple(auto_block_sizes)
        self.granularity_choice: str | None = None
        if granularity == AUTO:
            self.granularity: tuple[int, ...] | None = None  # chosen in setup("fit"), or read from a checkpoint
        else:
            self._build_network(granularity)
        self.generator_loss = GeneratorLoss(adversarial_weight, reconstruction_weight, feature_weight, entropy_weight)
        self.discriminator_loss = DiscriminatorLoss()
        self.lr = lr
        self.discriminator_lr = discriminator_lr
        self.betas = tuple(betas)
        self.default_max_epochs = default_max_epochs
        self.automatic_optimization = False

    def _build_network(self, granularity: Sequence[int]) -> None:
        """Build the network for one granularity, with the other architecture arguments of ``hparams``."""
        self.granularity = tuple(int(k) for k in granularity)
        if self.input_size is not None:
            check_input_size(self.input_size, self.granularity)
        arguments = self.hparams
        self.model = DivideAssembleModel(
            MemoryAutoencoder(
                channels=arguments["channels"],
                granularity=self.granularity,
                num_items=arguments["num_items"],
                similarity=arguments["similarity"],
                shrink_threshold=arguments["shrink_threshold"],
                temperature=arguments["temperature"],
                use_memory=arguments["use_memory"],
            ),
            Discriminator(channels=arguments["discriminator_channels"]),
            AnomalyMapGenerator(
                latent_weight=arguments["latent_weight"],
                sigma=arguments["sigma"],
                top_fraction=arguments["score_top_fraction"],
            ),
        )

    def setup(self, stage: str) -> None:
        """With ``granularity="auto"``, choose the block sizes from the training images before fitting.

        Every candidate is trained for ``auto_epochs`` on the normal training images minus a held-out
        fifth and judged on synthetic defects pasted on that fifth; the test split is never read. The
        choice is logged and becomes ``hparams["granularity"]``, so the checkpoint records it.

        Raises:
            ValueError: If there is no datamodule with training images to choose from.

        """
        if self.granularity is not None or stage != "fit":
            return
        from .granularity.auto import auto_granularity  # noqa: PLC0415  (imports the Engine)

        train_data = getattr(getattr(self.trainer, "datamodule", None), "train_data", None)
        if train_data is None:
            msg = (
                "granularity 'auto' chooses the block sizes from the datamodule's training images, but this run has "
                "no datamodule: pass one (--data / Engine.fit(datamodule=...)) or give the block sizes explicitly."
            )
            raise ValueError(msg)
        excluded = {"granularity", "auto_epochs", "auto_block_sizes", "default_max_epochs"}
        choice = auto_granularity(
            train_data,
            image_size=self.input_size or (256, 256),
            num_scales=len(self.hparams["channels"]),
            epochs=self.auto_epochs,
            model_arguments={
                **{k: v for k, v in self.hparams.items() if k not in excluded},
                "pre_processor": False,  # the datamodule already resizes to this model's input size
            },
            block_sizes=self.auto_block_sizes,
            latent_weight=self.hparams["latent_weight"],
        )
        self.granularity_choice = choice.reason
        logger.warning("Automatic granularity: %s", choice.reason)
        self.hparams["granularity"] = list(choice.granularity)
        self._build_network(choice.granularity)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the reason of an automatic granularity choice with the checkpoint."""
        if self.granularity_choice is not None:
            checkpoint["granularity_choice"] = self.granularity_choice
        super().on_save_checkpoint(checkpoint)

    def _require_network(self) -> None:
        if self.granularity is None:
            msg = (
                "granularity 'auto' is chosen when training starts: train first, or load the trained checkpoint "
                "(--ckpt_path), which records the chosen block sizes."
            )
            raise ValueError(msg)

    def on_validation_start(self) -> None:
        """Refuse to score with an unchosen automatic granularity."""
        self._require_network()

    def on_test_start(self) -> None:
        """Refuse to score with an unchosen automatic granularity."""
        self._require_network()

    def on_predict_start(self) -> None:
        """Refuse to score with an unchosen automatic granularity."""
        self._require_network()

    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """Resize to 256 x 256 (or ``image_size``), no normalisation: the model rebuilds ``[0, 1]`` images.

        Args:
            image_size: Target ``(height, width)``.

        Returns:
            The pre-processor.

        """
        return PreProcessor(transform=Compose([Resize(image_size or (256, 256), antialias=True)]))

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Image and pixel AUROC and F1 on the test set; image AUROC also on validation."""
        test_metrics = [
            AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
            F1Score(fields=["pred_label", "gt_label"], prefix="image_"),
            AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
            F1Score(fields=["pred_mask", "gt_mask"], prefix="pixel_", strict=False),
        ]
        val_metrics = [AUROC(fields=["pred_score", "gt_label"], prefix="image_")]
        return Evaluator(val_metrics=val_metrics, test_metrics=test_metrics)

    @classmethod
    def configure_visualizer(cls) -> RankZeroImageVisualizer:
        """The visualizer: anomalib's ``ImageVisualizer``, written by process 0 only under several processes."""
        return RankZeroImageVisualizer()

    def configure_optimizers(self) -> list[optim.Optimizer]:
        """Adam for the generator (autoencoder and memories), Adam for the discriminator."""
        generator = optim.Adam(self.model.autoencoder.parameters(), lr=self.lr, betas=self.betas)
        discriminator = optim.Adam(self.model.discriminator.parameters(), lr=self.discriminator_lr, betas=self.betas)
        return [generator, discriminator]

    def on_fit_start(self) -> None:
        """Replace Lightning's implicit 1000 epochs by ``default_max_epochs``."""
        fit_loop = self.trainer.fit_loop
        if fit_loop.max_epochs == LIGHTNING_DEFAULT_MAX_EPOCHS and fit_loop.max_steps == -1:
            logger.warning(
                "No training length given: DivideAssemble trains for %d epochs "
                "(set --trainer.max_epochs or --model.default_max_epochs to change it).",
                self.default_max_epochs,
            )
            fit_loop.max_epochs = self.default_max_epochs

    def configure_model(self) -> None:
        """Under several processes: one results folder, and batch norm over the global batch (see ``distributed``)."""
        if self._trainer is None:  # load_from_checkpoint (export, Python use) calls it without a Trainer
            return
        if self.trainer.world_size > 1:
            share_results_folder(self.trainer)  # anomalib's Engine made one results folder per process
        if self.trainer.state.fn == "fit" and self.trainer.world_size > 1:
            switched = use_sync_batchnorm(self.model)
            logger.info("%d processes: %d batch norms use the global batch", self.trainer.world_size, switched)

    def teardown(self, stage: str) -> None:
        """Give back plain ``BatchNorm2d`` layers after training (for export and single-process use)."""
        if stage == "fit":
            use_sync_batchnorm(self.model, enable=False)
        super().teardown(stage)

    def _check_finite(self, name: str, loss: torch.Tensor, parameters: Sequence[nn.Parameter], batch_idx: int) -> None:
        """Stop training before a NaN or infinite loss or gradient changes the weights."""
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
        if torch.isfinite(loss) and torch.isfinite(grad_norm):
            return
        checkpoint = getattr(self.trainer.checkpoint_callback, "best_model_path", "") or "none saved yet"
        msg = (
            f"The {name} loss became non-finite (loss {loss.item()}, gradient norm {grad_norm.item()}) at epoch "
            f"{self.current_epoch}, global step {self.global_step}, batch {batch_idx}. Training stopped before this "
            f"step changed the weights; the last good checkpoint is kept ({checkpoint}). Check the images for "
            f"NaN/inf values or lower --model.lr / --model.discriminator_lr."
        )
        raise NonFiniteLossError(msg)

    def training_step(self, batch: Batch, batch_idx: int) -> STEP_OUTPUT:
        """One generator step, then one discriminator step.

        Args:
            batch: Training batch; ``batch.image`` is ``(B, C, H, W)``.
            batch_idx: Index of the batch.

        Returns:
            The detached generator and discriminator losses.

        """
        generator_optimizer, discriminator_optimizer = self.optimizers()
        images = batch.image
        if images.shape[1] == 1:
            images = images.expand(-1, self.model.in_channels, -1, -1)
        reconstruction = self.model(images)
        real_logits, real_features = self.model.discriminator(images)
        with frozen(self.model.discriminator):  # the generator's gradient stops at the reconstruction
            fake_logits, fake_features = self.model.discriminator(reconstruction.image)
        terms = self.generator_loss(
            images, reconstruction.image, reconstruction.entropy, fake_logits, real_features, fake_features
        )
        fake_logits, _ = self.model.discriminator(reconstruction.image.detach())
        discriminator_loss = self.discriminator_loss(real_logits, fake_logits)

        # One backward pass for both players. Each parameter gets exactly its own player's gradient, so
        # the update is the same as a generator step followed by a discriminator step (the discriminator's
        # loss only uses its weights before either step), and DDP averages every gradient once per step.
        generator_optimizer.zero_grad()
        discriminator_optimizer.zero_grad()
        self.manual_backward(terms.total + discriminator_loss)
        self._check_finite("generator", terms.total, list(self.model.autoencoder.parameters()), batch_idx)
        self._check_finite("discriminator", discriminator_loss, list(self.model.discriminator.parameters()), batch_idx)
        generator_optimizer.step()
        discriminator_optimizer.step()

        self.log_dict(
            {
                "generator_loss": terms.total.detach(),
                "discriminator_loss": discriminator_loss.detach(),
                "reconstruction_loss": terms.reconstruction.detach(),
                "memory_entropy": terms.entropy.detach(),
            },
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            logger=bool(self.loggers),
            batch_size=images.shape[0],
            sync_dist=True,  # epoch means over all processes' batches (no cost in one process)
        )
        return {"generator_loss": terms.total.detach(), "discriminator_loss": discriminator_loss.detach()}

    def validation_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Score a validation batch (the post-processor learns thresholds from these).

        Args:
            batch: Validation batch.
            args: Unused.
            kwargs: Unused.

        Returns:
            The batch with ``pred_score`` and ``anomaly_map``.

        """
        del args, kwargs
        predictions = self.model(batch.image)
        return batch.update(**predictions._asdict())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint trained with another network configuration, saying which.

        Raises:
            CheckpointMismatchError: If granularity, channels, memory size or memory switch differ.

        """
        saved = checkpoint.get("hyper_parameters", {})
        if self.granularity is None and isinstance(saved.get("granularity"), list | tuple):
            # granularity "auto": adopt what the checkpoint's training chose.
            self.hparams["granularity"] = list(saved["granularity"])
            self._build_network(saved["granularity"])
            self.granularity_choice = checkpoint.get("granularity_choice")
        differences = []
        for name in ARCHITECTURE_ARGUMENTS:
            if name in saved and _plain(saved[name]) != _plain(self.hparams.get(name)):
                differences.append(
                    f"{name}: checkpoint {_plain(saved[name])}, this model {_plain(self.hparams.get(name))}"
                )
        if differences:
            settings = " ".join(
                f"--model.{name} {_cli_value(saved[name])}" for name in ARCHITECTURE_ARGUMENTS if name in saved
            )
            msg = (
                "This checkpoint was trained with another DivideAssemble configuration ("
                + "; ".join(differences)
                + f"). Build the model with the checkpoint's settings ({settings}), or pass the checkpoint "
                "that belongs to this configuration."
            )
            raise CheckpointMismatchError(msg)
        # Metric states of an evaluator this model was not built with (e.g. the leaderboard's AUPRO) are
        # not weights: drop them, so that such a checkpoint loads strictly for export, test or predict.
        state = checkpoint.get("state_dict", {})
        own = set(self.state_dict())
        for key in [key for key in state if key.startswith("evaluator.") and key not in own]:
            del state[key]
        super().on_load_checkpoint(checkpoint)

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """Two optimizers under manual optimization: no gradient clipping by the trainer."""
        return {"gradient_clip_val": 0, "num_sanity_val_steps": 0}

    @property
    def learning_type(self) -> LearningType:
        """One-class: trained on normal images only."""
        return LearningType.ONE_CLASS


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Let gradients pass through ``module`` without reaching its parameters, within the block."""
    flags = [(parameter, parameter.requires_grad) for parameter in module.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def _cli_value(value: Any) -> str:  # noqa: ANN401
    """How a value is written on the anomalib command line (lists without spaces)."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(str(item) for item in value) + "]"
    return str(value)


def _plain(value: Any) -> Any:  # noqa: ANN401
    """Turn tuples into lists, so that values saved in either form compare equal."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
