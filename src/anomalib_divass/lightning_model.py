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
from collections.abc import Sequence
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
from .discriminator import Discriminator
from .loss import DiscriminatorLoss, GeneratorLoss
from .torch_model import DivideAssembleModel, MemoryAutoencoder, check_input_size

__all__ = ["CheckpointMismatchError", "DivideAssemble", "NonFiniteLossError"]

logger = logging.getLogger(__name__)

LIGHTNING_DEFAULT_MAX_EPOCHS = 1000


class NonFiniteLossError(FloatingPointError):
    """A training loss or gradient became NaN or infinite."""


class CheckpointMismatchError(ValueError):
    """A checkpoint was trained with another network configuration."""


# Arguments that change the shape of the network; a checkpoint must agree on all of them.
ARCHITECTURE_ARGUMENTS = ("granularity", "channels", "num_items", "discriminator_channels", "use_memory")


class DivideAssemble(AnomalibModule):
    """Divide-and-Assemble (DAAD / DAAD+) anomaly detection.

    Args:
        granularity: Block side per scale in feature cells, finest scale first, one per
            entry of ``channels``. The default gives every block 64 x 64 image pixels at 256 x 256
            (a quarter of the image side at every scale).
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
        pre_processor: Pre-processor, or ``True`` for a 256 x 256 resize.
        post_processor: Post-processor, or ``True`` for anomalib's ``PostProcessor``.
        evaluator: Evaluator, or ``True`` for image and pixel AUROC and F1.
        visualizer: Visualizer, or ``True`` for anomalib's ``ImageVisualizer``.

    Example:
        >>> model = DivideAssemble(channels=[8, 16], granularity=[2, 1], pre_processor=False)
        >>> model.model.granularity
        (2, 1)

    """

    def __init__(
        self,
        granularity: Sequence[int] = (32, 16, 8, 4, 2),
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
        self.granularity = tuple(int(k) for k in granularity)
        if self.input_size is not None:
            check_input_size(self.input_size, self.granularity)
        self.model = DivideAssembleModel(
            MemoryAutoencoder(
                channels=channels,
                granularity=self.granularity,
                num_items=num_items,
                similarity=similarity,
                shrink_threshold=shrink_threshold,
                temperature=temperature,
                use_memory=use_memory,
            ),
            Discriminator(channels=discriminator_channels),
            AnomalyMapGenerator(latent_weight=latent_weight, sigma=sigma, top_fraction=score_top_fraction),
        )
        self.generator_loss = GeneratorLoss(adversarial_weight, reconstruction_weight, feature_weight, entropy_weight)
        self.discriminator_loss = DiscriminatorLoss()
        self.lr = lr
        self.discriminator_lr = discriminator_lr
        self.betas = tuple(betas)
        self.default_max_epochs = default_max_epochs
        self.automatic_optimization = False

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
        fake_logits, fake_features = self.model.discriminator(reconstruction.image)
        terms = self.generator_loss(
            images, reconstruction.image, reconstruction.entropy, fake_logits, real_features, fake_features
        )
        generator_optimizer.zero_grad()
        self.manual_backward(terms.total)
        self._check_finite("generator", terms.total, list(self.model.autoencoder.parameters()), batch_idx)
        generator_optimizer.step()

        fake_logits, _ = self.model.discriminator(reconstruction.image.detach())
        discriminator_loss = self.discriminator_loss(real_logits, fake_logits)
        discriminator_optimizer.zero_grad()
        self.manual_backward(discriminator_loss)
        self._check_finite("discriminator", discriminator_loss, list(self.model.discriminator.parameters()), batch_idx)
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
        super().on_load_checkpoint(checkpoint)

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """Two optimizers under manual optimization: no gradient clipping by the trainer."""
        return {"gradient_clip_val": 0, "num_sanity_val_steps": 0}

    @property
    def learning_type(self) -> LearningType:
        """One-class: trained on normal images only."""
        return LearningType.ONE_CLASS


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
