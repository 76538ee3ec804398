"""BlockMemory: divide/assemble, addressing, shrinkage, entropy, gradients."""

import pytest
import torch

from anomalib_divass.models.divide_assemble.memory import BlockMemory, assemble, divide, hard_shrink, weight_entropy


@pytest.mark.parametrize(("shape", "block_size"), [((2, 3, 8, 8), 1), ((2, 3, 8, 8), 4), ((1, 5, 16, 8), 8)])
def test_divide_then_assemble_is_exact(shape: tuple[int, ...], block_size: int) -> None:
    features = torch.randn(shape)
    blocks = divide(features, block_size)
    batch, channels, height, width = shape
    assert blocks.shape == (batch * (height // block_size) * (width // block_size), channels * block_size**2)
    assert torch.equal(assemble(blocks, block_size, features.shape), features)


def test_divide_puts_one_spatial_block_in_each_row() -> None:
    features = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    blocks = divide(features, 2)
    # block (row 0, column 1): channel 0 cells (0,2),(0,3),(1,2),(1,3), then channel 1.
    expected = torch.tensor([2.0, 3.0, 6.0, 7.0, 18.0, 19.0, 22.0, 23.0])
    assert torch.equal(blocks[1], expected)


def test_divide_rejects_maps_that_blocks_do_not_tile() -> None:
    with pytest.raises(ValueError, match="cannot be divided into 3 x 3 blocks"):
        divide(torch.zeros(1, 1, 8, 8), 3)


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_memory_output_shapes_and_weights(similarity: str) -> None:
    memory = BlockMemory(channels=4, block_size=2, num_items=10, similarity=similarity)
    readout = memory(torch.randn(3, 4, 8, 8))
    assert readout.output.shape == (3, 4, 8, 8)
    assert readout.weights.shape == (3 * 4 * 4, 10)
    assert torch.allclose(readout.weights.sum(dim=1), torch.ones(48), atol=1e-5)
    assert (readout.weights >= 0).all()
    assert readout.entropy.ndim == 0


def test_read_is_made_of_memory_items_only() -> None:
    """Every output block is a convex combination of items: the input never passes through."""
    memory = BlockMemory(channels=2, block_size=2, num_items=5)
    features = torch.randn(2, 2, 4, 4)
    readout = memory(features)
    blocks = divide(readout.output, 2)
    assert torch.allclose(blocks, readout.weights @ memory.items, atol=1e-6)


def test_hard_shrinkage_makes_weights_sparse() -> None:
    torch.manual_seed(0)
    dense = torch.softmax(torch.randn(64, 100) * 2.0, dim=1)
    sparse = hard_shrink(dense, threshold=1.0 / 100)
    assert (dense > 0).all()
    assert (sparse == 0).float().mean() > 0.5
    assert torch.allclose(sparse.sum(dim=1), torch.ones(64), atol=1e-5)
    assert ((sparse == 0) == (dense < 1.0 / 100)).all()


def test_memory_weights_are_sparse_after_shrinkage() -> None:
    torch.manual_seed(0)
    memory = BlockMemory(channels=8, block_size=2, num_items=50, shrink_threshold=1.0 / 50, temperature=0.05)
    weights = memory(torch.randn(2, 8, 8, 8)).weights
    assert (weights == 0).float().mean() > 0.5
    without = BlockMemory(channels=8, block_size=2, num_items=50, shrink_threshold=0.0)
    without.items.data.copy_(memory.items.data)
    assert (without(torch.randn(2, 8, 8, 8)).weights == 0).float().mean() == 0


def test_gradients_reach_memory_items_and_input() -> None:
    memory = BlockMemory(channels=3, block_size=2, num_items=6)
    features = torch.randn(2, 3, 4, 4, requires_grad=True)
    readout = memory(features)
    (readout.output.pow(2).sum() + readout.entropy).backward()
    assert memory.items.grad is not None
    assert memory.items.grad.abs().sum() > 0
    assert features.grad is not None
    assert features.grad.abs().sum() > 0


def test_entropy_falls_when_one_item_dominates() -> None:
    uniform = torch.full((4, 10), 0.1)
    peaked = torch.softmax(torch.tensor([[8.0] + [0.0] * 9] * 4), dim=1)
    one_hot = torch.eye(10)[:4]
    assert weight_entropy(uniform) > weight_entropy(peaked) > weight_entropy(one_hot)
    assert torch.isclose(weight_entropy(uniform), torch.log(torch.tensor(10.0)))
    assert weight_entropy(one_hot) == pytest.approx(0.0, abs=1e-6)


def test_block_equal_to_map_is_one_query_per_image() -> None:
    memory = BlockMemory(channels=2, block_size=8, num_items=3)
    assert memory(torch.randn(5, 2, 8, 8)).weights.shape == (5, 3)


def test_memory_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        BlockMemory(channels=2, block_size=0)
    with pytest.raises(ValueError, match="'euclid' is not a valid Similarity"):
        BlockMemory(channels=2, block_size=1, similarity="euclid")
