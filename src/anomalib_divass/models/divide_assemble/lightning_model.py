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
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import Evaluator, F1Score
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn, optim
from torchvision.transforms.v2 import Compose, Resize

from .anomaly_map import AnomalyMapGenerator, ErrorMeasure, Normalization
from .corruption import Corruption, InputCorruption
from .discriminator import Discriminator
from .distributed import share_results_folder, use_sync_batchnorm
from .export import DeploymentMixin
from .holdout import NormalStatisticsCollector, heldout_mask
from .loss import DiscriminatorLoss, GeneratorLoss, SegmentationLoss
from .metrics import DefinedAUROC
from .segmentation import DefectSegmenter
from .synthetic import defects_on_some
from .torch_model import DivideAssembleModel, MemoryAutoencoder, check_input_size
from .variants import Variant
from .visualizer import ReconstructionVisualizer, score_with_reconstruction

__all__ = ["CheckpointMismatchError", "DivideAssemble", "NonFiniteLossError"]

logger = logging.getLogger(__name__)

LIGHTNING_DEFAULT_MAX_EPOCHS = 1000
AUTO = "auto"


class NonFiniteLossError(FloatingPointError):
    """A training loss or gradient became NaN or infinite."""


class CheckpointMismatchError(ValueError):
    """A checkpoint was trained with another network configuration."""


# The defaults, written once: the config, the granularity tools and the leaderboard read them from here.
DEFAULT_GRANULARITY = (32, 16, 8, 4, 2)
DEFAULT_CHANNELS = (16, 32, 64, 128, 256)
DEFAULT_MAX_EPOCHS = 50
# The map and the training inputs, measured at the shipped budget on bottle and Magnetic Tile (docs/results/quality.md):
# the error measure and normalisation are chosen per product without labels, half the inputs get cut-paste rectangles.
DEFAULT_ERROR_MEASURE = "auto"
DEFAULT_NORMALIZATION = "auto"
DEFAULT_CORRUPTION = "cutpaste"
# The map output for localisation is smoothed more than the one the image score comes from (4 px):
# measured on bottle, Magnetic Tile and the washer, docs/results/quality.md ("Two smoothings").
DEFAULT_MAP_SIGMA = 8.0
DAAD_PLUS_LATENT_WEIGHT = 0.001  # the DAAD+ map weight measured best on bottle (0.01 was worse)
DISCRIMINATOR_SCALES = 4  # the discriminator has the encoder's first four widths
DISCRIMINATOR_LR_RATIO = 0.2  # discriminator learning rate / generator learning rate (DCGAN's 2e-4 at 1e-3)
ADAM_BETAS = (0.5, 0.999)

# Arguments that change the shape of the network; a checkpoint must agree on all of them.
ARCHITECTURE_ARGUMENTS = ("granularity", "channels", "num_items", "variant", "segmentation")
SEGMENTER_WIDTH = 16  # first-level channels of the defect segmenter (it works at half the image resolution)


def _check_range(
    name: str, value: float, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    """Raise a ``ValueError`` naming the argument and its valid range when ``value`` lies outside it."""
    inside = (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if not inside or value != value:  # noqa: PLR0124  (NaN)
        opening, closing = "(" if low_open else "[", ")" if high_open else "]"
        msg = f"--model.{name} must lie in {opening}{low}, {high}{closing}, got {value}."
        raise ValueError(msg)


class DivideAssemble(DeploymentMixin, AnomalibModule):
    """Divide-and-Assemble (DAAD / DAAD+) anomaly detection.

    Exported with anomalib's ``Engine.export`` (``anomalib export``); :class:`~.export.DeploymentMixin`
    checks the checkpoint and the export folder first and gives ``INT8_PTQ`` a quantization that keeps quality.

    Args:
        granularity: Block side per scale in feature cells, finest scale first, one per
            entry of ``channels``. The default gives every block 64 x 64 image pixels at 256 x 256
            (a quarter of the image side at every scale). ``"auto"``: chosen from normal training
            images before training by :class:`anomalib_divass.granularity.ChooseGranularity` (the
            command lines add it); the checkpoint records the chosen block sizes.
        channels: Encoder channels per stride-2 scale, finest first (the discriminator uses the
            first four).
        num_items: Memory items per scale.
        variant: One of the paper's five models (see :mod:`.variants`): ``"DAAD"`` (block memories on
            every skip connection), ``"DAAD+"`` (DAAD scored with the discriminator's latent error too),
            ``"AE+Skip"`` (no memory), ``"AE"`` (no skip connections, no memory), ``"MemAE"`` (no skip
            connections, a pixel-wise memory on the bottleneck).
        shrink_threshold: MemAE hard-shrinkage threshold of the addressing weights, in ``[0, 1)``.
        temperature: Softmax temperature of the cosine memory addressing, ``> 0``.
        latent_weight: DAAD+ only: share of the discriminator's latent error in the anomaly map, in
            ``[0, 1]`` (``(1 - w) * reconstruction error + w * latent error``, each on its normal scale
            when ``normalization`` is not ``"none"``).
        error_measure: How the image and its reconstruction are compared: ``"l2"``, ``"ssim"`` or
            ``"msgms"`` (see :mod:`.anomaly_map`), or ``"auto"``: each epoch L2, MSGMS or the equal mix of all three,
            whichever finds synthetic defects on held-out normal images best (see :mod:`.map_choice`; the
            default).
        normalization: Statistics of held-out normal training images that put the map on a normal
            scale: ``"none"``, ``"global"`` (one mean and spread) or ``"pixel"`` (per pixel; aligned
            products), or ``"auto"`` (chosen like ``error_measure="auto"``; the default). A fifth of the training
            images (chosen by file name) is then held out of training.
        corruption: Training inputs corrupted on half of the images (``"perlin"`` noise blotches or
            ``"cutpaste"`` rectangles, the default; see :mod:`.corruption`); the target stays the clean image, so
            the network learns to replace what does not belong. ``"none"``: plain reconstruction.
        segmentation: Train a defect segmenter beside the autoencoder (see :mod:`.segmentation`): half of the
            training images get a synthetic defect (:mod:`.synthetic`), the autoencoder rebuilds the clean image
            and the segmenter learns to mark the defect from the image and its reconstruction; its defect
            probability is then the anomaly map (``error_measure`` and ``normalization`` no longer apply).
        sigma: Gaussian smoothing of the anomaly map the image score is taken from, in pixels (0: none).
        map_sigma: Gaussian smoothing of the anomaly map that is output for localisation (pixel AUROC, PRO,
            the pictures' heat map), at least ``sigma``; ``None``: ``sigma``. Wider than ``sigma`` by default: it
            fills a defect's area more evenly, while the image score keeps the sharper map.
        score_top_fraction: The image score is the mean of this fraction of the map's highest
            pixels (1.0: the mean of the map; 1 / (H * W): its maximum).
        reconstruction_weight: Loss weight of the L1 reconstruction term.
        adversarial_weight: Loss weight of the adversarial term.
        alignment_weight: Loss weight of the discriminator-feature alignment term (the paper's
            lambda_ali), ``|f_D(x) - f_D(x_hat)|^2``.
        entropy_weight: Loss weight of the memory addressing entropy.
        lr: Learning rate of the generator (autoencoder and memories); the discriminator's is a fifth of it.
        visualize_reconstruction: Show the reconstruction in the pictures of ``anomalib test`` and ``predict``
            (a tile after the image, see :mod:`.visualizer`; it costs no extra forward). ``False``: anomalib's panels.
        pre_processor: Pre-processor, or ``True`` for a 256 x 256 resize.
        post_processor: Post-processor, or ``True`` for anomalib's ``PostProcessor``.
        evaluator: Evaluator, or ``True`` for image and pixel AUROC and F1.
        visualizer: Visualizer, or ``True`` for anomalib's ``ImageVisualizer`` with the reconstruction in every
            panel (:class:`~.visualizer.ReconstructionVisualizer`, written by process 0 only).

    Raises:
        ValueError: If an argument lies outside its valid range (the message names it and the range).

    Example:
        >>> model = DivideAssemble(channels=[8, 16], granularity=[2, 1], pre_processor=False)
        >>> model.model.granularity
        (2, 1)

    """

    def __init__(
        self,
        granularity: Sequence[int] | Literal["auto"] = DEFAULT_GRANULARITY,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        num_items: int = 100,
        variant: Literal["DAAD", "DAAD+", "AE", "MemAE", "AE+Skip"] = "DAAD",
        shrink_threshold: float = 0.0025,
        temperature: float = 0.05,
        latent_weight: float = DAAD_PLUS_LATENT_WEIGHT,
        error_measure: Literal["l2", "ssim", "msgms", "auto"] = DEFAULT_ERROR_MEASURE,
        normalization: Literal["none", "global", "pixel", "auto"] = DEFAULT_NORMALIZATION,
        corruption: Literal["none", "perlin", "cutpaste"] = DEFAULT_CORRUPTION,
        segmentation: bool = False,
        sigma: float = 4.0,
        map_sigma: float | None = DEFAULT_MAP_SIGMA,
        score_top_fraction: float = 0.01,
        reconstruction_weight: float = 50.0,
        adversarial_weight: float = 1.0,
        alignment_weight: float = 1.0,
        entropy_weight: float = 0.0002,
        lr: float = 1e-3,
        visualize_reconstruction: bool = True,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        _check_arguments(locals())
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.granularity_choice: str | None = None
        self.map_choice: str | None = None  # why the "auto" error measure chose what it did
        if granularity == AUTO:
            self.granularity: tuple[int, ...] | None = None  # chosen before fit, or read from a checkpoint
        else:
            self._build_network(granularity)
        self.corruption = InputCorruption(corruption)
        self.generator_loss = GeneratorLoss(adversarial_weight, reconstruction_weight, alignment_weight, entropy_weight)
        self.discriminator_loss = DiscriminatorLoss()
        self.segmentation_loss = SegmentationLoss()
        self.lr = lr
        self.visualize_reconstruction = visualize_reconstruction
        self.automatic_optimization = False

    def _build_network(self, granularity: Sequence[int]) -> None:
        """Build the network for one granularity, with the other architecture arguments of ``hparams``."""
        arguments = self.hparams
        variant = Variant(arguments["variant"])
        architecture = variant.architecture
        granularity = [int(k) for k in granularity]
        if architecture.pixel_memory:  # MemAE: one memory item per bottleneck cell
            granularity[-1] = 1
        self.granularity = tuple(granularity)
        if self.input_size is not None:
            check_input_size(self.input_size, self.granularity)
        autoencoder = MemoryAutoencoder(
            channels=arguments["channels"],
            granularity=self.granularity,
            num_items=arguments["num_items"],
            shrink_threshold=arguments["shrink_threshold"],
            temperature=arguments["temperature"],
            use_memory=architecture.memory,
            skips=architecture.skips,
        )
        self.model = DivideAssembleModel(
            autoencoder,
            Discriminator(channels=list(arguments["channels"])[:DISCRIMINATOR_SCALES]),
            AnomalyMapGenerator(  # with a segmenter its probability is the map: no error measure to choose
                measure=ErrorMeasure.L2 if arguments.get("segmentation") else arguments["error_measure"],
                normalization=Normalization.NONE if arguments.get("segmentation") else arguments["normalization"],
                latent_weight=arguments["latent_weight"] if variant.scores_latent else 0.0,
                sigma=arguments["sigma"],
                map_sigma=arguments["map_sigma"],  # older checkpoints: on_load_checkpoint restores one smoothing
                top_fraction=arguments["score_top_fraction"],
            ),
            (
                DefectSegmenter(autoencoder.in_channels, width=SEGMENTER_WIDTH)
                if arguments.get("segmentation")
                else None
            ),
        )

    def set_granularity(self, granularity: Sequence[int], reason: str | None = None) -> None:
        """Build the network for ``granularity`` chosen outside the model (``granularity="auto"``).

        The choice itself is made by a tool that trains and judges candidates (the ``ChooseGranularity``
        callback of :mod:`anomalib_divass.granularity`, which the ``anomalib`` and ``anomalib-divass``
        command lines add for ``--model.granularity auto``); it becomes ``hparams["granularity"]``, so the
        checkpoint records it, and ``reason`` is kept with the checkpoint.

        Args:
            granularity: Block side per scale, finest first.
            reason: Why it was chosen (one sentence for the log and the checkpoint).

        """
        self.granularity_choice = reason
        self.hparams["granularity"] = [int(k) for k in granularity]
        self._build_network(granularity)

    def setup(self, stage: str) -> None:
        """Refuse to train with a granularity that is still to be chosen.

        Raises:
            ValueError: If ``granularity="auto"`` reached ``fit`` without a choice.

        """
        if self.granularity is None and stage == "fit":
            msg = (
                "granularity 'auto' must be chosen before training: the anomalib and anomalib-divass command lines "
                "do it for you; from Python pass Engine(callbacks=[anomalib_divass.granularity.ChooseGranularity()]) "
                "or run `anomalib-divass granularity choose` and give the block sizes it writes."
            )
            raise ValueError(msg)

    @property
    def normal_statistics(self) -> NormalStatisticsCollector:
        """The collector of held-out normal images' error statistics (see :mod:`.holdout`)."""
        if getattr(self, "_normal_statistics", None) is None or self._normal_statistics.model is not self.model:
            self._normal_statistics = NormalStatisticsCollector(self.model)
        return self._normal_statistics

    def on_train_epoch_start(self) -> None:
        """Start the epoch's statistics of held-out normal images."""
        if self.model.anomaly_map.needs_statistics:
            self.normal_statistics.reset()

    def _store_normal_statistics(self) -> None:
        """Put this epoch's held-out statistics into the anomaly map's buffers (summed over processes)."""
        if not self.model.anomaly_map.needs_statistics or self._trainer is None or self.trainer.state.fn != "fit":
            return
        strategy = self.trainer.strategy
        count = self.normal_statistics.finish(
            (lambda totals: strategy.reduce(totals, reduce_op="sum")) if self.trainer.world_size > 1 else None
        )
        choice = self.normal_statistics.choice
        if choice is not None:
            self.map_choice = choice.reason
            logger.info("Automatic error measure: %s", choice.reason)
        if count == 0 and self.normal_statistics.size is not None:
            logger.warning(
                "Fewer than 2 held-out normal training images this epoch: the anomaly map keeps its previous "
                "normalisation. Add training images (a fifth of them, chosen by file name, is held out)."
            )

    def on_validation_epoch_start(self) -> None:
        """Use the statistics of the weights being validated."""
        self._store_normal_statistics()

    def on_train_end(self) -> None:
        """Store the last epoch's statistics when no validation followed it."""
        self._store_normal_statistics()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the reason of an automatic granularity choice with the checkpoint."""
        if self.granularity_choice is not None:
            checkpoint["granularity_choice"] = self.granularity_choice
        if self.map_choice is not None:
            checkpoint["map_choice"] = self.map_choice
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
        """Image and pixel AUROC and F1 on the test set; image AUROC also on validation.

        An AUROC of a set without anomalies is NaN with a warning, not anomalib's 0.0 (see :mod:`.metrics`).
        """
        test_metrics = [
            DefinedAUROC(fields=["pred_score", "gt_label"], prefix="image_"),
            F1Score(fields=["pred_label", "gt_label"], prefix="image_"),
            DefinedAUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
            F1Score(fields=["pred_mask", "gt_mask"], prefix="pixel_", strict=False),
        ]
        val_metrics = [DefinedAUROC(fields=["pred_score", "gt_label"], prefix="image_")]
        return Evaluator(val_metrics=val_metrics, test_metrics=test_metrics)

    @classmethod
    def configure_visualizer(cls) -> ReconstructionVisualizer:
        """The visualizer: anomalib's ``ImageVisualizer`` with the reconstruction, written by process 0 only."""
        return ReconstructionVisualizer()

    def configure_optimizers(self) -> list[optim.Optimizer]:
        """Adam for the generator (autoencoder and memories), Adam for the discriminator."""
        generator = optim.Adam(self._generator_parameters(), lr=self.lr, betas=ADAM_BETAS)
        discriminator = optim.Adam(
            self.model.discriminator.parameters(), lr=self.lr * DISCRIMINATOR_LR_RATIO, betas=ADAM_BETAS
        )
        return [generator, discriminator]

    def _generator_parameters(self) -> list[nn.Parameter]:
        """The autoencoder's (memories included) and the defect segmenter's parameters: one optimizer."""
        segmenter = self.model.segmenter
        return [*self.model.autoencoder.parameters(), *(segmenter.parameters() if segmenter is not None else [])]

    def on_fit_start(self) -> None:
        """Replace Lightning's implicit 1000 epochs by ``DEFAULT_MAX_EPOCHS``; refuse ``max_epochs`` 0.

        Raises:
            ValueError: If ``--trainer.max_epochs`` is 0 (nothing would be trained, yet metrics would be printed).

        """
        fit_loop = self.trainer.fit_loop
        if fit_loop.max_epochs == 0:
            msg = (
                "--trainer.max_epochs 0 trains nothing: the test metrics would be those of an untrained model and no "
                f"checkpoint would be written. Give at least 1 epoch (the default is {DEFAULT_MAX_EPOCHS})."
            )
            raise ValueError(msg)
        if fit_loop.max_epochs == LIGHTNING_DEFAULT_MAX_EPOCHS and fit_loop.max_steps == -1:
            logger.warning(
                "No training length given: DivideAssemble trains for %d epochs "
                "(set --trainer.max_epochs to change it).",
                DEFAULT_MAX_EPOCHS,
            )
            fit_loop.max_epochs = DEFAULT_MAX_EPOCHS

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
            f"NaN/inf values or lower --model.lr."
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
        if self.model.anomaly_map.needs_statistics:  # a fifth of the images is measured, never trained on
            heldout = heldout_mask(getattr(batch, "image_path", None), images.shape[0]).to(images.device)
            self.normal_statistics.add(images[heldout])
            images = images[~heldout]
            if images.shape[0] == 0:
                return None
        inputs = self.corruption(images)
        masks = None
        if self.model.segmenter is not None:  # half of the images get a synthetic defect to segment
            inputs, masks = defects_on_some(inputs)
        reconstruction = self.model(inputs)  # rebuild the clean images from corrupted / defective copies
        real_logits, real_features = self.model.discriminator(images)
        with frozen(self.model.discriminator):  # the generator's gradient stops at the reconstruction
            fake_logits, fake_features = self.model.discriminator(reconstruction.image)
        terms = self.generator_loss(
            images, reconstruction.image, reconstruction.entropy, fake_logits, real_features, fake_features
        )
        fake_logits, _ = self.model.discriminator(reconstruction.image.detach())
        discriminator_loss = self.discriminator_loss(real_logits, fake_logits)
        generator_loss = terms.total
        if masks is not None:  # the segmenter learns on the reconstruction as it is; it does not shape it
            segmentation_loss = self.segmentation_loss(
                self.model.segmenter(inputs, reconstruction.image.detach()), masks
            )
            generator_loss = generator_loss + segmentation_loss

        # One backward pass for both players. Each parameter gets exactly its own player's gradient, so
        # the update is the same as a generator step followed by a discriminator step (the discriminator's
        # loss only uses its weights before either step), and DDP averages every gradient once per step.
        generator_optimizer.zero_grad()
        discriminator_optimizer.zero_grad()
        self.manual_backward(generator_loss + discriminator_loss)
        self._check_finite("generator", generator_loss, self._generator_parameters(), batch_idx)
        self._check_finite("discriminator", discriminator_loss, list(self.model.discriminator.parameters()), batch_idx)
        generator_optimizer.step()
        discriminator_optimizer.step()

        self.log_dict(
            {
                "generator_loss": terms.total.detach(),
                "discriminator_loss": discriminator_loss.detach(),
                "reconstruction_loss": terms.reconstruction.detach(),
                "memory_entropy": terms.entropy.detach(),
                **({"segmentation_loss": segmentation_loss.detach()} if masks is not None else {}),
            },
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            logger=bool(self.loggers),
            batch_size=images.shape[0],
            sync_dist=True,  # epoch means over all processes' batches (no cost in one process)
        )
        return {"generator_loss": generator_loss.detach(), "discriminator_loss": discriminator_loss.detach()}

    def test_step(self, batch: Batch, batch_idx: int, *args, **kwargs) -> STEP_OUTPUT:
        """Score a test batch like anomalib, keeping the reconstruction for the pictures (see :mod:`.visualizer`).

        Args:
            batch: Test batch.
            batch_idx: Unused.
            args: Unused.
            kwargs: Unused.

        Returns:
            The batch with ``pred_score`` and ``anomaly_map``.

        """
        del batch_idx, args, kwargs
        return score_with_reconstruction(self.model, batch, keep=self.visualize_reconstruction)

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> STEP_OUTPUT:
        """Score a batch like anomalib, keeping the reconstruction for the pictures (see :mod:`.visualizer`).

        Args:
            batch: Batch of images.
            batch_idx: Unused.
            dataloader_idx: Unused.

        Returns:
            The batch with ``pred_score`` and ``anomaly_map``.

        """
        del batch_idx, dataloader_idx
        return score_with_reconstruction(self.model, batch, keep=self.visualize_reconstruction)

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
        self.map_choice = checkpoint.get("map_choice", self.map_choice)
        if "sigma" in saved and "map_sigma" not in saved and getattr(self, "model", None) is not None:
            # Trained before the map had its own smoothing: its pixel threshold belongs to the one smoothing.
            self.hparams["map_sigma"] = None
            self.model.anomaly_map.set_map_sigma(None)
        saved = {"segmentation": False, **saved}  # checkpoints from before the segmenter have none
        differences = []
        for name in ARCHITECTURE_ARGUMENTS:
            if (
                name in saved
                and name in self.hparams
                and _architecture(name, saved[name]) != _architecture(name, self.hparams.get(name))
            ):
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


def _architecture(name: str, value: Any) -> Any:  # noqa: ANN401
    """What an architecture argument builds: variants that share a network (DAAD, DAAD+) compare equal."""
    if name == "variant" and value in {variant.value for variant in Variant}:
        return Variant(value).architecture
    return _plain(value)


def _plain(value: Any) -> Any:  # noqa: ANN401
    """Turn tuples into lists, so that values saved in either form compare equal."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _check_arguments(arguments: dict[str, Any]) -> None:
    """Validate the constructor arguments of :class:`DivideAssemble`, naming the valid range of a bad one.

    Raises:
        ValueError: For the first argument outside its range.

    """
    granularity, channels = arguments["granularity"], arguments["channels"]
    if isinstance(granularity, str) and granularity != AUTO:
        msg = (
            "--model.granularity must be a list of block sizes (one per scale, finest first) or 'auto', "
            f"got {granularity!r}."
        )
        raise ValueError(msg)
    if not isinstance(granularity, str) and any(int(k) < 1 for k in granularity):
        msg = f"--model.granularity block sizes must be >= 1, got {list(granularity)}."
        raise ValueError(msg)
    if any(int(c) < 1 for c in channels) or not channels:
        msg = f"--model.channels must be positive widths, one per scale, got {list(channels)}."
        raise ValueError(msg)
    choices = {
        "variant": [variant.value for variant in Variant],
        "error_measure": [measure.value for measure in ErrorMeasure],
        "normalization": [normalization.value for normalization in Normalization],
        "corruption": [corruption.value for corruption in Corruption],
    }
    for name, allowed in choices.items():
        if str(getattr(arguments[name], "value", arguments[name])) not in allowed:
            msg = f"--model.{name} must be one of {allowed}, got {arguments[name]!r}."
            raise ValueError(msg)
    if not isinstance(arguments.get("segmentation", False), bool):
        msg = f"--model.segmentation must be true or false, got {arguments['segmentation']!r}."
        raise ValueError(msg)
    if arguments.get("segmentation") and (
        str(getattr(arguments["error_measure"], "value", arguments["error_measure"])) != DEFAULT_ERROR_MEASURE
        or str(getattr(arguments["normalization"], "value", arguments["normalization"])) != DEFAULT_NORMALIZATION
    ):
        msg = (
            "--model.segmentation true makes the defect segmenter's probabilities the anomaly map, so "
            "--model.error_measure and --model.normalization do not apply: leave them at their defaults "
            f"({DEFAULT_ERROR_MEASURE} and {DEFAULT_NORMALIZATION}), or set --model.segmentation false to score "
            "the reconstruction error."
        )
        raise ValueError(msg)
    if arguments["num_items"] < 1:
        msg = f"--model.num_items must be >= 1, got {arguments['num_items']}."
        raise ValueError(msg)
    _check_range("shrink_threshold", arguments["shrink_threshold"], 0.0, 1.0, high_open=True)
    _check_range("temperature", arguments["temperature"], 0.0, math.inf, low_open=True)
    _check_range("sigma", arguments["sigma"], 0.0, 64.0)
    if arguments.get("map_sigma") is not None:
        if arguments["map_sigma"] < arguments["sigma"]:
            msg = (
                f"--model.map_sigma ({arguments['map_sigma']}) must be at least --model.sigma ({arguments['sigma']}): "
                "the output map is the score's map smoothed further. Set --model.map_sigma to sigma or wider, "
                "or to null for one smoothing."
            )
            raise ValueError(msg)
        _check_range("map_sigma", arguments["map_sigma"], 0.0, 64.0)
    _check_range("score_top_fraction", arguments["score_top_fraction"], 0.0, 1.0, low_open=True)
    _check_range("lr", arguments["lr"], 0.0, 1.0, low_open=True)
    _check_range("latent_weight", arguments["latent_weight"], 0.0, 1.0)
    if not isinstance(arguments.get("visualize_reconstruction", True), bool):
        msg = f"--model.visualize_reconstruction must be true or false, got {arguments['visualize_reconstruction']!r}."
        raise ValueError(msg)
    for name in ("reconstruction_weight", "adversarial_weight", "alignment_weight", "entropy_weight"):
        _check_range(name, arguments[name], 0.0, math.inf)
