"""Screen quality levers of DivideAssemble quickly: one training, every anomaly map scored.

A proxy for the full model (``anomalib train``): the same network code (``MemoryAutoencoder``,
``AnomalyMapGenerator``) trained with a plain loop on images held in memory, at a small size and
few epochs, without the discriminator. One training is scored with every error measure (l2, ssim,
msgms) under every normalisation (none, global, pixel; statistics from held-out normal training
images), so that the levers of the map are compared on the same weights. Training levers
(corruption of the input, loss, granularity, epochs) are arguments. Prints a table and appends it
as rows to ``--csv``.

Confirm winners with the real model at the shipped budget (``anomalib-divass leaderboard``). With
``--checkpoint`` a model trained by ``anomalib train`` (or the leaderboard) is scored instead of a proxy:
its reconstructions, every map, and each smoothing of ``--sigma`` (nothing is trained).

    python benchmarks/quality_probe.py --root ../shared/datasets/mvtec_ad --category bottle --size 128 --epochs 25
    python benchmarks/quality_probe.py --root ../shared/datasets --category magnetic_tile --corruption perlin
    python benchmarks/quality_probe.py --root ../shared/datasets/mvtec_ad --category bottle --size 256 \
        --checkpoint runs/lb/checkpoints/bottle/DAAD.ckpt --sigma 4 8
"""

from __future__ import annotations

import argparse
import csv
import math
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.metrics.aupro import _AUPRO
from PIL import Image
from sklearn.metrics import roc_auc_score

from anomalib_divass import DivideAssemble
from anomalib_divass.data.image import read_image
from anomalib_divass.models.divide_assemble.anomaly_map import (
    MEASURES,
    SPREAD_FLOOR,
    AnomalyMapGenerator,
    ErrorMeasure,
    Normalization,
    NormalStatistics,
)
from anomalib_divass.models.divide_assemble.loss import SegmentationLoss
from anomalib_divass.models.divide_assemble.map_choice import candidate_criteria, map_candidates
from anomalib_divass.models.divide_assemble.segmentation import DefectSegmenter
from anomalib_divass.models.divide_assemble.synthetic import defects_on_some
from anomalib_divass.models.divide_assemble.torch_model import MemoryAutoencoder

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def load(path: Path, size: int, mask: bool = False) -> torch.Tensor:
    if mask:
        array = np.array(Image.open(path).convert("L").resize((size, size), Image.Resampling.NEAREST)) > 127
        return torch.from_numpy(array).float()[None]
    image = read_image(path, as_tensor=True)
    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def load_category(root: Path, size: int) -> dict[str, torch.Tensor | list]:
    train = sorted(p for p in (root / "train" / "good").iterdir() if p.suffix.lower() in SUFFIXES)
    heldout = [p for p in train if zlib.crc32(p.name.encode()) % 5 == 0]
    fit = [p for p in train if p not in heldout]
    tests, labels, masks, kinds = [], [], [], []
    for folder in sorted((root / "test").iterdir()):
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES):
            tests.append(load(path, size))
            labels.append(int(folder.name != "good"))
            kinds.append(folder.name)
            if folder.name == "good":
                masks.append(torch.zeros(1, size, size))
            else:
                mask_path = root / "ground_truth" / folder.name / f"{path.stem}_mask.png"
                masks.append(load(mask_path, size, mask=True))
    return {
        "fit": torch.stack([load(p, size) for p in fit]),
        "heldout": torch.stack([load(p, size) for p in heldout]),
        "test": torch.stack(tests),
        "labels": torch.tensor(labels),
        "masks": torch.stack(masks),
        "kinds": kinds,
    }


def corrupt(images: torch.Tensor, kind: str, generator: object) -> torch.Tensor:
    if kind == "none":
        return images
    if kind == "perlin":
        out, _ = generator(images)  # type: ignore[operator]
        return out.clamp(0, 1)
    if kind == "cutpaste":
        out = images.clone()
        batch, _, height, width = images.shape
        for index in range(batch):
            if torch.rand(()) < 0.5:
                continue
            h, w = (int(torch.randint(height // 16, height // 4, ())) for _ in range(2))
            y0, x0, y1, x1 = (int(torch.randint(0, s, ())) for s in (height - h, width - w) * 2)
            source = int(torch.randint(0, batch, ()))
            out[index, :, y1 : y1 + h, x1 : x1 + w] = images[source, :, y0 : y0 + h, x0 : x0 + w]
        return out
    msg = f"unknown corruption {kind}"
    raise ValueError(msg)


def reconstruction_loss(images: torch.Tensor, output: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(output, images)
    if kind == "l2":
        return F.mse_loss(output, images)
    if kind == "l2+ssim":
        from anomalib_divass.models.divide_assemble.anomaly_map import StructuralError

        return F.mse_loss(output, images) + StructuralError()(images, output).mean()
    if kind == "l1+msgms":
        from anomalib_divass.models.divide_assemble.anomaly_map import GradientSimilarityError

        return F.l1_loss(output, images) + GradientSimilarityError()(images, output).mean()
    msg = f"unknown loss {kind}"
    raise ValueError(msg)


def train(data: dict, args: argparse.Namespace) -> MemoryAutoencoder:
    torch.manual_seed(args.seed)
    model = MemoryAutoencoder(
        channels=args.channels,
        granularity=args.granularity,
        num_items=args.num_items,
        use_memory=not args.no_memory,
    )
    head = (
        DefectSegmenter(data["fit"].shape[1], width=args.segment_width, stride=args.segment_stride)
        if args.segment
        else None
    )
    parameters = [*model.parameters(), *(head.parameters() if head is not None else [])]
    optimizer = torch.optim.Adam(parameters, lr=args.lr, betas=(0.5, 0.999))
    segmentation_loss = SegmentationLoss()
    images = data["fit"]
    steps = args.epochs * math.ceil(len(images) / args.batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if args.cosine else None
    perlin = None
    if args.corruption == "perlin":
        from anomalib.data.utils.generators import PerlinAnomalyGenerator

        perlin = PerlinAnomalyGenerator(probability=0.5, blend_factor=(0.2, 1.0))
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(images))
        total = 0.0
        for start in range(0, len(images), args.batch):
            clean = images[order[start : start + args.batch]]
            if args.flip:
                clean = torch.where(torch.rand(len(clean), 1, 1, 1) < 0.5, clean.flip(-1), clean)
            inputs = corrupt(clean, args.corruption, perlin)
            if head is not None:  # half the batch gets a synthetic defect: reconstruct clean, segment the defect
                inputs, masks = defects_on_some(inputs)
            output = model(inputs)
            loss = reconstruction_loss(clean, output.image, args.loss) + 0.0002 * output.entropy
            if head is not None:
                logits = head(inputs, output.image.detach())
                loss = loss + segmentation_loss(logits, masks)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            total += float(loss.detach()) * len(clean)
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1}: loss {total / len(images):.5f}", flush=True)
    model.segmenter = head  # type: ignore[assignment]  (a submodule: eval() reaches it)
    return model.eval()


@torch.no_grad()
def reconstruct(model: MemoryAutoencoder, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    return torch.cat([model(images[i : i + batch]).image for i in range(0, len(images), batch)])


def _row(
    name: str,
    anomaly_map: torch.Tensor,
    labels: np.ndarray,
    masks: np.ndarray,
    generator: AnomalyMapGenerator,
    synthetic: float = float("nan"),
    region_masks: torch.Tensor | None = None,
) -> dict:
    """Image AUROC from the map at ``sigma``; pixel AUROC and PRO from the map at ``map_sigma``, as the model."""
    localized = generator.localize(anomaly_map)
    pro = float("nan")
    if region_masks is not None:  # the leaderboard's PRO: anomalib's AUPRO up to 30 % false positives
        metric = _AUPRO(fpr_limit=0.3)
        metric.update(localized[:, 0], region_masks[:, 0].int())
        pro = float(metric.compute())
    return {
        "map": name,
        "image_AUROC": roc_auc_score(labels, generator.score(anomaly_map).numpy()),
        "pixel_AUROC": roc_auc_score(masks, localized.flatten().numpy()),
        "PRO": pro,
        "synthetic": synthetic,
    }


def evaluate(
    data: dict,
    model: MemoryAutoencoder,
    args: argparse.Namespace,
    sigma: float,
    map_sigma: float,
    discriminator: torch.nn.Module | None = None,
) -> list[dict]:
    """Score the test set with every candidate map; beside it, the model's label-free criterion for it.

    With a ``discriminator`` (a scored checkpoint) the chosen map is also scored as DAAD+ for each
    ``--latent-weight``: ``(1 - w) * map + w * latent error``, the latent error on the chosen normal scale.
    """
    heldout, test = data["heldout"], data["test"]
    labels = data["labels"].numpy()
    masks = data["masks"].flatten().numpy().astype(bool)
    regions = data["masks"] if args.pro else None
    scale = args.size / 256
    generator = AnomalyMapGenerator(
        ErrorMeasure.AUTO, Normalization.AUTO, sigma=sigma * scale, map_sigma=max(sigma, map_sigma) * scale
    )
    candidates = [
        *map_candidates(ErrorMeasure.AUTO, Normalization.NONE, alone=MEASURES),
        *map_candidates(ErrorMeasure.AUTO, Normalization.AUTO, alone=MEASURES),
    ]
    with torch.no_grad():
        criteria = candidate_criteria(generator, lambda x: reconstruct(model, x), heldout, candidates)
        heldout_rebuilt, test_rebuilt = reconstruct(model, heldout), reconstruct(model, test)
        statistics = NormalStatistics()
        statistics.update(generator.reconstruction_error(heldout, heldout_rebuilt))
        raw = generator.reconstruction_error(test, test_rebuilt)
    chosen = max(
        (index for index, candidate in enumerate(candidates) if candidate.normalization is not Normalization.NONE),
        key=lambda index: float(criteria[index]),
    )
    rows = []
    segment = None
    if getattr(model, "segmenter", None) is not None:

        def probability(images: torch.Tensor, rebuilt: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                logits = [model.segmenter(images[i : i + 32], rebuilt[i : i + 32]) for i in range(0, len(images), 32)]
                return generator.blur(torch.sigmoid(torch.cat(logits)))

        segment, normal_segment = probability(test, test_rebuilt), probability(heldout, heldout_rebuilt)
        segment_z = (segment - normal_segment.mean()) / normal_segment.std().clamp_min(1e-6)
        rows.append(_row("segmentation head", segment, labels, masks, generator, region_masks=regions))
    for index, candidate in enumerate(candidates):
        if candidate.normalization is Normalization.NONE:
            mean, spread = torch.zeros(()), torch.ones(())
        else:
            mean, spread = statistics.result(candidate.normalization, args.spread_floor)
        weights = torch.tensor(candidate.weights).reshape(1, -1, 1, 1)
        anomaly_map = (((raw - mean) / spread) * weights).sum(dim=1, keepdim=True)
        if segment is not None and candidate.normalization is not Normalization.NONE:  # both on the normal scale
            combined = segment_z + anomaly_map
            rows.append(_row(f"head + {candidate.name}", combined, labels, masks, generator, region_masks=regions))
        name = candidate.name + (" (chosen)" if index == chosen else "")
        rows.append(_row(name, anomaly_map, labels, masks, generator, float(criteria[index]), regions))
        if index == chosen and discriminator is not None:
            latent_statistics = NormalStatistics()
            block = args.latent_block
            latent_statistics.update(latent_error(generator, discriminator, heldout, heldout_rebuilt, block))
            latent_map = latent_error(generator, discriminator, test, test_rebuilt, block)
            latent_mean, latent_spread = latent_statistics.result(candidate.normalization, args.spread_floor)
            latent_map = (latent_map - latent_mean) / latent_spread
            for weight in args.latent_weight:
                mixed = (1 - weight) * anomaly_map + weight * latent_map
                name = f"DAAD+ {candidate.name} w={weight} block {block}"
                rows.append(_row(name, mixed, labels, masks, generator, region_masks=regions))
    return rows


@torch.no_grad()
def latent_error(
    generator: AnomalyMapGenerator,
    discriminator: torch.nn.Module,
    images: torch.Tensor,
    rebuilt: torch.Tensor,
    block: int = -1,
) -> torch.Tensor:
    """The discriminator's latent error maps ``(B, 1, H, W)`` of images and their reconstructions (smoothed).

    ``block``: which stride-2 block's features (-1: the last, the model's latent; 0: the first).
    """

    def features(batch: torch.Tensor) -> torch.Tensor:
        outputs = []
        for layer in discriminator.features:
            batch = layer(batch)
            if isinstance(layer, torch.nn.LeakyReLU):
                outputs.append(batch)
        return outputs[block]

    maps = []
    for start in range(0, len(images), 32):
        latent, latent_rebuilt = features(images[start : start + 32]), features(rebuilt[start : start + 32])
        maps.append(generator.latent_error(latent, latent_rebuilt, images.shape[-2:]))
    return torch.cat(maps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--cosine", action="store_true", help="cosine learning-rate schedule to 0")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--granularity", type=int, nargs="+", default=[16, 8, 4, 2, 1])
    parser.add_argument("--num-items", type=int, default=100)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--corruption", default="none", choices=["none", "perlin", "cutpaste"])
    parser.add_argument("--loss", default="l1", choices=["l1", "l2", "l2+ssim", "l1+msgms"])
    parser.add_argument("--flip", action="store_true", help="random horizontal flips")
    parser.add_argument("--segment", action="store_true", help="train a segmentation head on synthetic defects")
    parser.add_argument("--segment-width", type=int, default=16, help="width of the segmentation head")
    parser.add_argument("--segment-stride", type=int, default=2, help="resolution divisor of the segmentation head")
    parser.add_argument("--sigma", type=float, nargs="+", default=[4.0], help="map smoothing(s), pixels at 256 px")
    parser.add_argument(
        "--map-sigma",
        type=float,
        nargs="+",
        default=[0.0],
        help="smoothing(s) of the map for pixel AUROC and PRO (the model's map_sigma; below --sigma: --sigma)",
    )
    parser.add_argument(
        "--latent-weight",
        type=float,
        nargs="*",
        default=[],
        help="with --checkpoint: also score the chosen map as DAAD+ with these latent weights",
    )
    parser.add_argument(
        "--spread-floor",
        type=float,
        default=SPREAD_FLOOR,
        help="share of the whole map's spread added to each pixel's spread (per-pixel normalisation)",
    )
    parser.add_argument(
        "--latent-block",
        type=int,
        default=-1,
        help="discriminator block whose features give the latent error (-1: the last, as the model)",
    )
    parser.add_argument("--pro", action="store_true", help="also compute PRO (anomalib's AUPRO, FPR 0.3; slower)")
    parser.add_argument("--checkpoint", type=Path, help="score this trained DivideAssemble checkpoint; no training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="")
    parser.add_argument("--csv", type=Path, default=Path("runs/quality_probe.csv"))
    args = parser.parse_args()

    start = time.perf_counter()
    data = load_category(args.root / args.category, args.size)
    print(
        f"{args.category}: {len(data['fit'])} training, {len(data['heldout'])} held-out, "
        f"{len(data['test'])} test images",
        flush=True,
    )
    discriminator = None
    if args.checkpoint is not None:
        network = DivideAssemble.load_from_checkpoint(args.checkpoint, map_location="cpu").model.eval()
        model, discriminator = network.autoencoder, network.discriminator
    else:
        model = train(data, args)
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model, args.csv.parent / f"{args.category}_{args.tag or 'probe'}_seed{args.seed}.pt")
    seconds = time.perf_counter() - start
    for sigma in args.sigma:
        for map_sigma in args.map_sigma:
            report(data, model, args, sigma, max(sigma, map_sigma), seconds, discriminator)


def report(
    data: dict,
    model: MemoryAutoencoder,
    args: argparse.Namespace,
    sigma: float,
    map_sigma: float,
    seconds: float,
    discriminator: torch.nn.Module | None = None,
) -> None:
    """Print the table of every map at one smoothing and append its rows to ``--csv``."""
    rows = evaluate(data, model, args, sigma, map_sigma, discriminator)
    settings = {
        "category": args.category,
        "tag": args.tag,
        "size": args.size,
        "epochs": args.epochs,
        "granularity": " ".join(map(str, args.granularity)),
        "memory": not args.no_memory,
        "corruption": args.corruption,
        "loss": args.loss,
        "cosine": args.cosine,
        "flip": args.flip,
        "segment": f"w{args.segment_width}/s{args.segment_stride}" if args.segment else "",
        "seed": args.seed,
        "checkpoint": str(args.checkpoint or ""),
        "sigma": sigma,
        "map_sigma": map_sigma,
        "spread_floor": args.spread_floor,
        "train_s": round(seconds) if args.checkpoint is None else 0,  # a scored checkpoint trains nothing
    }
    print(f"\n{settings}")
    print("| map | image AUROC | pixel AUROC | PRO | synthetic (label-free criterion) |\n|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['map']} | {row['image_AUROC']:.3f} | {row['pixel_AUROC']:.3f} | {row['PRO']:.3f} "
            f"| {row['synthetic']:.3f} |"
        )
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    new = not args.csv.exists()
    with args.csv.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*settings, "map", "image_AUROC", "pixel_AUROC", "PRO", "synthetic"])
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({**settings, **row})


if __name__ == "__main__":
    main()
