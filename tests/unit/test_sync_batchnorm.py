"""SyncBatchNorm2d in a real two-process gloo group equals BatchNorm2d on the whole batch, gradients included."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from anomalib_divass.models.divide_assemble.distributed import SyncBatchNorm2d, use_sync_batchnorm

WORLD = 2


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch ``(8, 4, 5, 5)`` (shifted and scaled per channel) and weights for a loss."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(8, 4, 5, 5, generator=generator) * torch.tensor([1.0, 3.0, 0.2, 10.0]).view(1, -1, 1, 1)
    return features + torch.tensor([0.0, -2.0, 5.0, 1.0]).view(1, -1, 1, 1), torch.randn(
        8, 4, 5, 5, generator=generator
    )


def layer(cls: type[nn.BatchNorm2d]) -> nn.BatchNorm2d:
    norm = cls(4)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 0.5, 2.0, -1.0]))
        norm.bias.copy_(torch.tensor([0.1, 0.0, -0.3, 0.2]))
    return norm


def worker(rank: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    features, weights = batch()
    share = slice(rank * 4, (rank + 1) * 4)
    norm = layer(SyncBatchNorm2d)
    local = features[share].clone().requires_grad_()
    output = norm(local)
    (output * weights[share]).sum().backward()  # this process's part of the global loss
    torch.save(
        {
            "output": output.detach(),
            "input_grad": local.grad,
            "weight_grad": norm.weight.grad,
            "bias_grad": norm.bias.grad,
            "running_mean": norm.running_mean,
            "running_var": norm.running_var,
        },
        Path(out) / f"rank{rank}.pt",
    )
    torch.distributed.destroy_process_group()


def test_two_processes_normalise_and_backpropagate_like_one_process_with_the_whole_batch(tmp_path: Path) -> None:
    mp.start_processes(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD)]

    features, weights = batch()
    reference = layer(nn.BatchNorm2d)
    whole = features.clone().requires_grad_()
    output = reference(whole)
    (output * weights).sum().backward()

    torch.testing.assert_close(torch.cat([r["output"] for r in ranks]), output.detach(), rtol=1e-5, atol=1e-5)
    # Gradients reach each process's inputs through the other process's statistics too.
    torch.testing.assert_close(torch.cat([r["input_grad"] for r in ranks]), whole.grad, rtol=1e-4, atol=1e-5)
    # DDP sums (then averages) parameter gradients over processes; the sum is the whole-batch gradient.
    torch.testing.assert_close(sum(r["weight_grad"] for r in ranks), reference.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sum(r["bias_grad"] for r in ranks), reference.bias.grad, rtol=1e-4, atol=1e-5)
    for r in ranks:  # identical running statistics on every process, those of the whole batch
        torch.testing.assert_close(r["running_mean"], reference.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["running_var"], reference.running_var, rtol=1e-5, atol=1e-6)
    # Per-process statistics (what plain BatchNorm2d would do under DDP) differ clearly.
    per_process = torch.cat([layer(nn.BatchNorm2d)(features[i * 4 : (i + 1) * 4]) for i in range(WORLD)])
    assert not torch.allclose(per_process, output, atol=1e-2)


def test_switching_keeps_the_same_parameters_and_checkpoint_keys() -> None:
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    weight = network[1].weight
    keys = list(network.state_dict())
    assert use_sync_batchnorm(network) == 2
    assert type(network[2][0]) is SyncBatchNorm2d
    assert network[1].weight is weight  # optimizers built before keep working
    assert list(network.state_dict()) == keys
    assert use_sync_batchnorm(network, enable=False) == 2
    assert type(network[1]) is nn.BatchNorm2d


@pytest.mark.parametrize("training", [True, False])
def test_one_process_is_plain_batch_norm(training: bool) -> None:
    features, _ = batch()
    sync, plain = layer(SyncBatchNorm2d).train(training), layer(nn.BatchNorm2d).train(training)
    torch.testing.assert_close(sync(features), plain(features))
