"""The training step's single backward pass gives the usual generator-then-discriminator updates.

``DivideAssemble.training_step`` back-propagates the generator and discriminator losses together (so that
DDP reduces every gradient once per step). This checks it against the textbook order, written out here:
generator loss, backward, generator step; then discriminator loss on the detached reconstruction,
backward, discriminator step.
"""

from __future__ import annotations

import copy

import torch
from anomalib.data import ImageBatch
from lightning.pytorch import Trainer

from anomalib_divass import DivideAssemble


def sequential_step(module: DivideAssemble, images: torch.Tensor) -> None:
    """One generator step, then one discriminator step, each with its own backward pass."""
    generator_optimizer, discriminator_optimizer = module.configure_optimizers()
    module.train()
    reconstruction = module.model(images)
    real_logits, real_features = module.model.discriminator(images)
    fake_logits, fake_features = module.model.discriminator(reconstruction.image)
    terms = module.generator_loss(
        images, reconstruction.image, reconstruction.entropy, fake_logits, real_features, fake_features
    )
    generator_optimizer.zero_grad()
    terms.total.backward()
    generator_optimizer.step()
    fake_logits, _ = module.model.discriminator(reconstruction.image.detach())
    discriminator_loss = module.discriminator_loss(real_logits, fake_logits)
    discriminator_optimizer.zero_grad()
    discriminator_loss.backward()
    discriminator_optimizer.step()


def test_one_backward_pass_equals_generator_then_discriminator_steps() -> None:
    torch.manual_seed(0)
    module = DivideAssemble(
        channels=[8, 16, 16],
        granularity=[4, 2, 1],
        num_items=8,
        latent_weight=0.1,
        error_measure="l2",  # every image trains, uncorrupted: the two orders see the same batch
        normalization="none",
        corruption="none",
        pre_processor=False,
        post_processor=False,
        evaluator=False,
        visualizer=False,
    )
    reference, initial = copy.deepcopy(module), copy.deepcopy(module)
    images = torch.rand(4, 3, 32, 32)

    trainer = Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, torch.utils.data.DataLoader([ImageBatch(image=images)], batch_size=None))
    sequential_step(reference, images)

    for (name, trained), (_, expected) in zip(
        module.model.state_dict().items(), reference.model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(trained, expected, rtol=1e-5, atol=1e-6, msg=name)
    # Both players did move (the comparison is not between untouched weights).
    for part in ("autoencoder", "discriminator"):
        before = getattr(initial.model, part).state_dict()
        after = getattr(module.model, part).state_dict()
        assert any(not torch.equal(after[name], before[name]) for name in before), part
