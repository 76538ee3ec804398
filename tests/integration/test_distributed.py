"""DivideAssemble under Lightning's DDP, for real: two CPU processes (gloo) through the anomalib command line.

The distributed run must finish, write one results folder (checkpoint and every visualization, from
process 0), and train the same model as one process on the same global batch. To make "the same
global batch" exact, every step takes the whole training set (32 images: 16 per process, or 32 in one),
so sampler order cannot matter; both runs are seeded (``--seed_everything 0``) and DDP broadcasts process
0's initial weights, memory items included. What is left are float summation orders (gradient
all-reduce, batch statistics summed over processes, ~1e-7), which Adam amplifies for parameters with
near-zero gradients (rarely addressed memory items): measured here, 3 steps, worst tensor 7.6e-5 relative
L2 difference with the global-batch batch norm, 1.8e-2 with per-process batch norm. The tolerance, 1e-3,
sits between the two. Hard shrinkage is off in this test (``shrink_threshold 0``): with it, an addressing
weight that rounding puts on the other side of the threshold switches an item's gradient on or off, a
discontinuity of the model, not of DDP (with it the worst tensor is 7.8e-4, per-process batch norm 1.6e-2).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from cli_helpers import anomalib, metrics_of, mvtec

pytestmark = pytest.mark.integration

TOLERANCE = 1e-3  # relative L2 difference per tensor (parameters and batch norm statistics)
# A small network keeps two trainings and their tests under a minute on 2 cores.
SMALL = ["--model.channels", "[8,16]", "--model.granularity", "[32,16]"]
CONTINUOUS = ["--model.shrink_threshold", "0"]  # see above
# Plain reconstruction of every image: the default random corruption draws differ between one process and
# two (each has its own random stream), and a held-out fifth makes the processes' batches uneven, so DDP's
# mean of per-process means is not the one-process mean. Held-out statistics and the map choice summed over
# processes: tests/unit/test_anomaly_map.py::test_statistics_and_map_choice_are_summed_over_processes.
PLAIN = ["--model.corruption", "none", "--model.error_measure", "l2", "--model.normalization", "none"]
EPOCHS = 3  # one step per epoch: the whole training set is one global batch


@dataclass
class Run:
    process: subprocess.CompletedProcess
    results: Path

    @property
    def checkpoint(self) -> dict:
        (path,) = self.results.glob("v*/weights/lightning/model.ckpt")
        return torch.load(path, map_location="cpu", weights_only=False)

    @property
    def state(self) -> dict[str, torch.Tensor]:
        return self.checkpoint["state_dict"]


def train(root: Path, workdir: Path, devices: int, batch: int) -> Run:
    flags = [
        *SMALL,
        *CONTINUOUS,
        *PLAIN,
        *mvtec(root),
        "--data.train_batch_size",
        str(batch),
        "--data.eval_batch_size",
        "8",
        "--data.num_workers",
        "0",
        "--seed_everything",
        "0",
        "--trainer.max_epochs",
        str(EPOCHS),
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        str(devices),
        "--trainer.enable_progress_bar",
        "false",
    ]
    if devices > 1:
        flags += ["--trainer.strategy", "ddp"]
    process = anomalib("train", "--model", "DivideAssemble", *flags, cwd=workdir)
    return Run(process, workdir / "results" / "DivideAssemble" / "MVTecAD" / "washer")


@pytest.fixture(scope="module")
def runs(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Run]:
    distributed = train(tiny_root, tmp_path_factory.mktemp("ddp"), devices=2, batch=16)
    single = train(tiny_root, tmp_path_factory.mktemp("single"), devices=1, batch=32)
    return distributed, single


def test_ddp_run_finishes_and_only_process_0_writes(runs: tuple[Run, Run]) -> None:
    distributed, _ = runs
    output = distributed.process.stdout + distributed.process.stderr
    assert distributed.process.returncode == 0, output[-3000:]
    assert "MEMBER: 2/2" in output  # really two processes
    assert {"image_AUROC", "pixel_AUROC"} <= metrics_of(distributed.process.stdout).keys()
    versions = sorted(path.name for path in distributed.results.glob("v*"))
    assert versions == ["v0"], versions  # one results folder, not one per process
    assert (distributed.results / "latest").resolve() == (distributed.results / "v0").resolve()
    assert len(list(distributed.results.glob("v0/weights/lightning/*.ckpt"))) == 1
    # Each process tested half of the 16 test images; process 0 gathered and drew all of them.
    assert len(list((distributed.results / "v0" / "images").rglob("*.png"))) == 16


def test_ddp_model_matches_one_process_on_the_same_global_batch(runs: tuple[Run, Run]) -> None:
    distributed, single = runs
    assert single.process.returncode == 0, single.process.stderr[-3000:]
    ddp_state, single_state = distributed.state, single.state
    compared = 0
    for name, expected in single_state.items():
        if not name.startswith("model.") or not expected.is_floating_point():
            continue
        difference = (ddp_state[name] - expected).norm() / expected.norm().clamp_min(1e-12)
        assert difference < TOLERANCE, f"{name}: relative difference {difference:.2e}"
        compared += 1
    assert compared > 20
    # The same number of steps: one per epoch (two optimizer steps each), in both runs.
    assert distributed.checkpoint["global_step"] == single.checkpoint["global_step"] == 2 * EPOCHS


def test_thresholds_come_from_every_process_validation_images(runs: tuple[Run, Run]) -> None:
    distributed, single = runs
    ddp_state, single_state = distributed.state, single.state
    for name in ("_image_threshold", "_pixel_threshold", "image_min", "image_max", "pixel_min", "pixel_max"):
        key = f"post_processor.{name}"
        assert torch.isfinite(single_state[key]), key
        assert torch.allclose(ddp_state[key], single_state[key], rtol=1e-3), (key, ddp_state[key], single_state[key])
    ddp_metrics, single_metrics = metrics_of(distributed.process.stdout), metrics_of(single.process.stdout)
    assert ddp_metrics["image_AUROC"] == pytest.approx(single_metrics["image_AUROC"], abs=1e-3)


CHOICE_LOG = re.compile(
    r"anomalib_divass\.granularity\.callback - \w+ - (Choosing the granularity|Automatic granularity)"
)


def test_ddp_chooses_the_granularity_once_and_every_process_builds_it(tiny_root: Path, tmp_path: Path) -> None:
    # The command line adds ChooseGranularity for --model.granularity auto; naming it sets tiny candidates.
    tiny_choice = [
        "--trainer.callbacks+=anomalib_divass.granularity.ChooseGranularity",
        "--trainer.callbacks.epochs",
        "1",
        "--trainer.callbacks.block_sizes",
        "[8,32]",
    ]
    flags = [
        "--model.channels",
        "[8,16]",
        "--model.granularity",
        "auto",
        *mvtec(tiny_root),
        "--data.train_batch_size",
        "8",
        "--data.eval_batch_size",
        "8",
        "--data.num_workers",
        "0",
        "--seed_everything",
        "0",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_val_batches",
        "0",  # the choice and the checkpoint are under test here, not the scores
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.enable_progress_bar",
        "false",
        *tiny_choice,
    ]
    process = anomalib("fit", "--model", "DivideAssemble", *flags, cwd=tmp_path)
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-3000:]
    assert "MEMBER: 2/2" in output  # really two processes
    # Process 0 chose once (one "Choosing" and one result line in the plain log format), the other waited.
    assert [match.group(1) for match in CHOICE_LOG.finditer(output)] == [
        "Choosing the granularity",
        "Automatic granularity",
    ]
    # Both processes built the broadcast network (DDP refuses parameters that differ in shape), and
    # the checkpoint records the choice.
    run = Run(process, tmp_path / "results" / "DivideAssemble" / "MVTecAD" / "washer")
    checkpoint = run.checkpoint
    granularity = checkpoint["hyper_parameters"]["granularity"]
    assert isinstance(granularity, list)
    assert granularity in ([8, 8], [32, 32])  # k=8 or k=32 (maps of 128 and 64 cells at 256 x 256)
    assert f"granularity {granularity}" in checkpoint["granularity_choice"]
    assert "synthetic defects" in checkpoint["granularity_choice"]
