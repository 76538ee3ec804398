"""Train DAAD, DAAD+ and the vanilla autoencoder on real MVTec-layout data; print one table.

Every run goes through anomalib's command line with the shipped config (the package's
``configs/divide_assemble.yaml``, printed by ``anomalib-divass config``). DAAD and the vanilla
autoencoder (variant ``AE+Skip``) are trained; DAAD+ is the trained DAAD checkpoint scored as variant
``DAAD+`` with ``latent_weight`` > 0 (the discriminator is trained in both, only the anomaly map differs):
anomalib's ``Engine`` validates it first, so that the post-processor learns thresholds and
normalisation for the DAAD+ map, then tests it.

Example:
    python benchmarks/real_data.py --root ../shared/datasets/mvtec_ad --category bottle
    python benchmarks/real_data.py --root ../shared/datasets --category magnetic_tile --epochs 20
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

METRIC_ROW = re.compile(r"│\s*(image_\w+|pixel_\w+)\s*│\s*([0-9.eE+-]+)\s*│")


def anomalib(*args: str, log: Path) -> tuple[dict[str, float], float]:
    """Run ``anomalib <args>``, keep its output in ``log``, return its test metrics and seconds."""
    start = time.perf_counter()
    command = [str(Path(sys.executable).parent / "anomalib"), *args]
    with log.open("w") as file:
        process = subprocess.run(command, stdout=subprocess.PIPE, stderr=file, text=True, check=False)
        file.write(process.stdout)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        msg = f"anomalib {' '.join(args)} failed (exit {process.returncode}); see {log}"
        raise RuntimeError(msg)
    return {name: float(value) for name, value in METRIC_ROW.findall(process.stdout)}, seconds


def evaluate_plus(checkpoint: Path, weight: float, root: Path, category: str, out: Path) -> tuple[dict, float]:
    """Validate (thresholds, normalisation) and test a DAAD checkpoint as DAAD+ with ``weight``."""
    from anomalib.engine import Engine

    from anomalib_divass import DivideAssemble, MVTec

    start = time.perf_counter()
    model = DivideAssemble.load_from_checkpoint(checkpoint, variant="DAAD+", latent_weight=weight)  # DAAD's network
    datamodule = MVTec(root=root, category=category, eval_batch_size=16, num_workers=2)
    engine = Engine(default_root_dir=out / f"plus_{weight}", logger=False)
    engine.validate(model, datamodule=datamodule)
    (metrics,) = engine.test(model, datamodule=datamodule)
    return {name: float(value) for name, value in metrics.items()}, time.perf_counter() - start


def main() -> None:
    """Run the three variants on one category and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--latent-weights", type=float, nargs="+", default=[0.001, 0.01])
    parser.add_argument("--out", type=Path, default=Path("results/real_data"))
    parser.add_argument("--variants", nargs="+", default=["DAAD", "vanilla AE"], choices=["DAAD", "vanilla AE"])
    parser.add_argument("--plus-only", type=Path, default=None, help="only evaluate DAAD+ of this DAAD checkpoint")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = ["--data.root", str(args.root.resolve()), "--data.category", args.category]
    rows = []
    if args.plus_only:
        for weight in args.latent_weights:
            metrics, seconds = evaluate_plus(args.plus_only, weight, args.root, args.category, args.out)
            print(f"DAAD+ (latent_weight {weight}): {metrics} in {seconds:.0f} s")
        return
    from anomalib_divass.configs import config_path

    variants = {"DAAD": [], "vanilla AE": ["--model.variant", "AE+Skip"]}
    for name in args.variants:
        extra = variants[name]
        root = args.out / args.category / name.replace(" ", "_")
        log = args.out / f"{args.category}_{name.replace(' ', '_')}.log"
        metrics, seconds = anomalib(
            "train", "--config", str(config_path()), *data, "--trainer.max_epochs", str(args.epochs),
            "--default_root_dir", str(root), *extra, log=log,
        )  # fmt: skip
        rows.append((name, metrics, seconds))
        print(f"{name}: {metrics} in {seconds:.0f} s", flush=True)
        if name == "DAAD":
            (checkpoint,) = root.rglob("model.ckpt")
            for weight in args.latent_weights:
                metrics_plus, seconds_plus = evaluate_plus(checkpoint, weight, args.root, args.category, root)
                rows.append((f"DAAD+ (latent_weight {weight})", metrics_plus, seconds_plus))
                print(f"DAAD+ {weight}: {metrics_plus}", flush=True)
    print(f"\n{args.category}, {args.epochs} epochs, shipped config\n")
    print("| variant | image AUROC | pixel AUROC | image F1 | pixel F1 | time (s) |")
    print("|---|---|---|---|---|---|")
    for name, metrics, seconds in rows:
        f1 = (f"{metrics.get('image_F1Score', float('nan')):.3f}", f"{metrics.get('pixel_F1Score', float('nan')):.3f}")
        image, pixel = metrics.get("image_AUROC", float("nan")), metrics.get("pixel_AUROC", float("nan"))
        print(f"| {name} | {image:.3f} | {pixel:.3f} | {f1[0]} | {f1[1]} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
