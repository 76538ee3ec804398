"""Generator and discriminator losses."""

import torch

from anomalib_divass.models.divide_assemble.loss import DiscriminatorLoss, GeneratorLoss


def _inputs(offset: float = 0.0) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    images = torch.rand(2, 3, 8, 8)
    return images, images + offset, torch.tensor(0.3), torch.zeros(2), torch.ones(2, 4, 2, 2), torch.ones(2, 4, 2, 2)


def test_generator_loss_is_the_weighted_sum_of_its_terms() -> None:
    loss = GeneratorLoss(adversarial_weight=2.0, reconstruction_weight=50.0, alignment_weight=3.0, entropy_weight=0.5)
    terms = loss(*_inputs(offset=0.1))
    assert torch.isclose(terms.reconstruction, torch.tensor(0.1), atol=1e-6)
    assert torch.isclose(terms.adversarial, torch.log(torch.tensor(2.0)))  # logit 0 against "real"
    assert terms.latent == 0
    expected = 2.0 * terms.adversarial + 50.0 * terms.reconstruction + 3.0 * terms.latent + 0.5 * terms.entropy
    assert torch.isclose(terms.total, expected)


def test_generator_loss_grows_with_reconstruction_error() -> None:
    loss = GeneratorLoss()
    assert loss(*_inputs(0.2)).total > loss(*_inputs(0.1)).total > loss(*_inputs(0.0)).total


def test_latent_term_does_not_train_the_real_branch() -> None:
    real = torch.ones(1, 2, requires_grad=True)
    fake = torch.zeros(1, 2, requires_grad=True)
    images = torch.rand(1, 3, 4, 4)
    GeneratorLoss()(images, images, torch.tensor(0.0), torch.zeros(1), real, fake).total.backward()
    assert real.grad is None
    assert fake.grad.abs().sum() > 0


def test_discriminator_loss_rewards_telling_real_from_fake() -> None:
    loss = DiscriminatorLoss()
    confident = loss(torch.full((4,), 5.0), torch.full((4,), -5.0))
    fooled = loss(torch.full((4,), -5.0), torch.full((4,), 5.0))
    unsure = loss(torch.zeros(4), torch.zeros(4))
    assert confident < unsure < fooled
    assert torch.isclose(unsure, torch.log(torch.tensor(2.0)))
