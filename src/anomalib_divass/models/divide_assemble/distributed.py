"""What DivideAssemble needs to train on several processes: batch norm over the global batch, one writer.

Under data parallelism (``--trainer.strategy ddp``) every process sees ``1 / N`` of each batch. The
autoencoder and the discriminator normalise their activations with batch norm, so each process would
normalise with the statistics of its own small share, and the model would depend on the number of
processes. :class:`SyncBatchNorm2d` normalises with the statistics of the whole batch across processes,
like torch's ``nn.SyncBatchNorm``, but on every device and backend (torch's refuses CPU tensors, so it
cannot run under the ``gloo`` backend on CPU nodes). Outside training, or in one process, it is exactly
``nn.BatchNorm2d``; it has the same parameters and buffers, so checkpoints do not change.

anomalib's ``Engine`` makes a new versioned results folder (``v0``, ``v1``...) and points ``latest`` at
it in every process it starts, so under DDP process 1 made ``v1`` and took ``latest`` away from process
0's ``v0``, which holds the checkpoint. :func:`share_results_folder` gives the folder back: the other
processes remove the empty folder they made and point ``latest`` at process 0's.

Testing or predicting on several processes splits the images among them;
:class:`RankZeroImageVisualizer` gathers every batch to process 0, which alone writes the pictures (so
they all land on its disk, also across nodes without a shared file system).

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    >>> use_sync_batchnorm(net), type(net[1]).__name__
    (1, 'SyncBatchNorm2d')
    >>> use_sync_batchnorm(net, False), type(net[1]).__name__
    (1, 'BatchNorm2d')

"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from anomalib.visualization import ImageVisualizer
from torch import nn

if TYPE_CHECKING:
    from anomalib.data import ImageBatch
    from lightning.pytorch import LightningModule, Trainer

__all__ = [
    "RankZeroImageVisualizer",
    "SyncBatchNorm2d",
    "distributed_world_size",
    "share_results_folder",
    "use_sync_batchnorm",
]


def distributed_world_size() -> int:
    """Number of processes of the default process group (1 when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are those of the global batch across all processes.

    Mean and variance (two passes, as ``BatchNorm2d`` computes them) are summed over the processes with
    a differentiable all-reduce, so gradients also flow through the other processes' statistics, as in
    one process with the whole batch. Running statistics are updated like ``BatchNorm2d``'s (unbiased
    variance), and are therefore identical on every process.

    Example:
        >>> bn = SyncBatchNorm2d(4)
        >>> x = torch.randn(8, 4, 5, 5)
        >>> torch.allclose(bn(x), nn.BatchNorm2d(4)(x), atol=1e-6)  # one process: plain batch norm
        True

    """

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Normalise ``(B, C, H, W)`` features with the global batch statistics while training.

        Args:
            features: Features ``(B, C, H, W)`` of this process's share of the batch.

        Returns:
            Normalised features ``(B, C, H, W)``.

        """
        if not self.training or distributed_world_size() == 1:
            return super().forward(features)
        from torch.distributed.nn.functional import all_reduce  # noqa: PLC0415

        self._check_input_dim(features)
        dtype, features = features.dtype, features.float()  # statistics in float32, also under mixed precision
        channels = features.shape[1]
        local = torch.cat([features.sum(dim=(0, 2, 3)), features.new_full((1,), features.numel() / channels)])
        totals = all_reduce(local)
        count = totals[-1].detach()
        mean = totals[:channels] / count
        centered = features - mean.view(1, -1, 1, 1)
        variance = all_reduce(centered.square().sum(dim=(0, 2, 3))) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(variance.detach() * count / (count - 1).clamp_min(1), momentum)
        output = centered * torch.rsqrt(variance + self.eps).view(1, -1, 1, 1)
        if self.affine:
            output = output * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return output.to(dtype)


def use_sync_batchnorm(module: nn.Module, enable: bool = True) -> int:
    """Switch every ``BatchNorm2d`` of ``module`` to :class:`SyncBatchNorm2d` (or back), in place.

    The layers keep their parameters and buffers (the same tensors, so optimizers already built keep
    working); only their class changes.

    Args:
        module: The network.
        enable: ``True`` to synchronise, ``False`` to go back to ``BatchNorm2d``.

    Returns:
        Number of layers switched.

    """
    source, target = (nn.BatchNorm2d, SyncBatchNorm2d) if enable else (SyncBatchNorm2d, nn.BatchNorm2d)
    switched = 0
    for layer in module.modules():
        if type(layer) is source:
            layer.__class__ = target
            switched += 1
    return switched


class RankZeroImageVisualizer(ImageVisualizer):
    """anomalib's ``ImageVisualizer``; with several processes, process 0 writes every picture.

    Each process scores its share of the test (or predict) images; their batches are gathered to
    process 0, which draws and saves all of them, so the other processes write nothing. In one process
    it is exactly ``ImageVisualizer``.

    Example:
        >>> RankZeroImageVisualizer().output_dir is None  # under the run's results folder, as anomalib's
        True

    """

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,  # noqa: ANN401
        batch: ImageBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Draw and save the batch's pictures (on process 0, every process's batch)."""
        if trainer.world_size == 1 or not dist.is_initialized():
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
            return
        gathered: list[Any] = [None] * trainer.world_size
        dist.all_gather_object(gathered, batch.to("cpu") if hasattr(batch, "to") else batch)
        if trainer.is_global_zero:
            for shard in gathered:
                super().on_test_batch_end(trainer, pl_module, outputs, shard, batch_idx, dataloader_idx)


def share_results_folder(trainer: Trainer) -> Path:
    """Make every process use process 0's results folder; remove the empty ones the others made.

    Call it once the processes are connected (e.g. in ``configure_model``). A folder is only removed if
    it holds no file, and ``latest`` is only moved if it points at the removed folder.

    Args:
        trainer: The trainer of this process.

    Returns:
        Process 0's results folder.

    """
    shared = Path(trainer.strategy.broadcast(str(trainer.default_root_dir)))
    own = Path(trainer.default_root_dir)
    if trainer.global_rank == 0 or own.resolve() == shared.resolve() or not own.is_dir():
        return shared
    if not any(path.is_file() for path in own.rglob("*")):
        latest = own.parent / "latest"
        if latest.is_symlink() and latest.resolve() == own.resolve() and shared.is_dir():
            temporary = latest.with_name(f".latest.{os.getpid()}")
            temporary.symlink_to(shared.resolve(), target_is_directory=True)
            temporary.replace(latest)  # atomic: `latest` always points somewhere
        for folder in sorted((p for p in own.rglob("*") if p.is_dir()), reverse=True):
            folder.rmdir()
        own.rmdir()
    return shared
