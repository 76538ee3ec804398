"""Streaming a large folder through the exported model: images/s and peak memory for 1,000 and 10,000 images.

Scores generated folders with ``anomalib_divass.inference.score_folder`` (what ``python -m
anomalib_divass.inference`` and ``anomalib-divass predict-folder`` run): reader threads decode PNGs
while OpenVINO runs in throughput mode (``PERFORMANCE_HINT THROUGHPUT``, all its infer requests), and
every result is appended to a CSV. Each folder size runs in a fresh process, so every peak is its own.
A flat curve means the same images/s and the same peak memory for 1,000 and 10,000 images; the
"RSS at 10% / 100%" columns show memory does not grow during a run either.

* Images: the demo generator's washers (``anomalib_divass.demo.data.render_sample``, a fifth with
  defects) at ``--image-size`` px, PNG. A pool of ``--distinct`` rendered images is written over and over
  under new names (decoding cost does not depend on which washer it is); folders are reused if complete.
* Model: ``--model model.xml``, or a freshly initialised default DivideAssemble (256 x 256, five scales)
  exported with anomalib's ``to_openvino``: speed does not depend on the weights.
* Peak RSS: ``resource.getrusage`` of the scoring process (so it includes Python, torch, OpenVINO and
  the compiled model); "model loaded" is the RSS before the first image.

Usage:
    python benchmarks/stream.py [--root runs/stream] [--counts 1000 10000] [--image-size 256]
        [--model model.xml] [--workers N] [--threads N] [--precision auto]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    """Current resident memory of this process, MB."""
    with Path("/proc/self/statm").open() as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    """Peak resident memory of this process, MB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def make_folder(folder: Path, count: int, image_size: int, distinct: int, seed: int = 0) -> Path:
    """``count`` demo washers as PNG files in ``folder`` (kept if already complete)."""
    from PIL import Image

    from anomalib_divass.demo.data import DEFECT_TYPES, render_sample

    names = [folder / f"{index:06d}.png" for index in range(count)]
    if folder.is_dir() and sum(1 for _ in folder.glob("*.png")) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pool = []
    for index in range(distinct):
        defect = DEFECT_TYPES[index % len(DEFECT_TYPES)] if index % 5 == 4 else None
        image, _ = render_sample(rng, image_size, defect)
        path = folder / "pool.png"
        Image.fromarray((image * 255).astype(np.uint8)).save(path)
        pool.append(path.read_bytes())
    (folder / "pool.png").unlink()
    for index, path in enumerate(names):
        path.write_bytes(pool[index % distinct])
    return folder


def export_default_model(root: Path) -> Path:
    """A freshly initialised default DivideAssemble exported to OpenVINO under ``root``."""
    from anomalib_divass import DivideAssemble

    path = root / "weights" / "openvino" / "model.xml"
    if not path.is_file():
        DivideAssemble().eval().to_openvino(root)
    return path


def score_once(args: argparse.Namespace) -> dict:
    """Score one folder in this process; return the measurements."""
    from anomalib_divass.inference import score_folder, throughput_model

    config = {"INFERENCE_NUM_THREADS": args.threads} if args.threads else None
    model = throughput_model(args.model, precision=args.precision, config=config)
    loaded = rss_mb()
    images = sorted(Path(args.folder).glob("*.png"))
    marks = {max(1, len(images) // 10): "rss_10", len(images): "rss_100"}
    samples: dict[str, float] = {}
    count = 0

    def sample(_: object) -> None:
        nonlocal count
        count += 1
        if count in marks:
            samples[marks[count]] = rss_mb()

    output = Path(args.output)
    output.unlink(missing_ok=True)
    start = time.perf_counter()
    summary = score_folder(model, args.folder, output, workers=args.workers, on_result=sample)
    seconds = time.perf_counter() - start
    compiled = model.model
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    return {
        "images": summary.scored,
        "failed": len(summary.failed),
        "seconds": seconds,
        "images_per_s": summary.scored / seconds,
        "peak_mb": peak_rss_mb(),
        "loaded_mb": loaded,
        **samples,
        "streams": int(compiled.get_property("NUM_STREAMS")),
        "requests": int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
        "ov_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
        "precision": getattr(precision, "get_type_name", lambda: str(precision))(),
        "workers": args.workers or min(os.cpu_count() or 1, 8),
        "csv_rows": sum(1 for _ in output.open()) - 1,
    }


def main() -> None:
    """Generate the folders, score each in a fresh process, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/stream"))
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--distinct", type=int, default=50, help="distinct rendered washers per folder")
    parser.add_argument("--model", type=Path, default=None, help="exported model.xml (default: untrained default)")
    parser.add_argument("--workers", type=int, default=None, help="reader threads (default: CPUs, at most 8)")
    parser.add_argument("--threads", type=int, default=None, help="OpenVINO threads (default: all cores)")
    parser.add_argument("--precision", default="auto", choices=["auto", "f32", "bf16", "f16"])
    parser.add_argument("--folder", help=argparse.SUPPRESS)  # internal: score one folder in this process
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.folder:
        print(json.dumps(score_once(args)))
        return

    args.root.mkdir(parents=True, exist_ok=True)
    model = args.model or export_default_model(args.root / "model")
    rows = []
    for count in args.counts:
        folder = make_folder(args.root / f"images_{count}", count, args.image_size, args.distinct)
        command = [
            sys.executable,
            __file__,
            "--folder",
            str(folder),
            "--output",
            str(args.root / f"scores_{count}.csv"),
        ]
        command += ["--model", str(model), "--precision", args.precision]
        command += ["--workers", str(args.workers)] if args.workers else []
        command += ["--threads", str(args.threads)] if args.threads else []
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    first = rows[0]
    print(
        f"\nStreaming {args.image_size} px PNGs through {model} with OpenVINO THROUGHPUT: "
        f"{first['streams']} streams, {first['requests']} infer requests, {first['ov_threads']} inference threads, "
        f"precision {first['precision']}, {first['workers']} reader threads; OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs.\n"
    )
    print(
        "| images | seconds | images/s | ms/image | peak RSS MB | model loaded MB | RSS at 10% / 100% MB | CSV rows |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['images']:,} | {row['seconds']:.1f} | {row['images_per_s']:.1f} | "
            f"{1000 / row['images_per_s']:.2f} | {row['peak_mb']:.0f} | {row['loaded_mb']:.0f} | "
            f"{row.get('rss_10', float('nan')):.0f} / {row.get('rss_100', float('nan')):.0f} | {row['csv_rows']:,} |"
        )
    if len(rows) > 1:
        speed = rows[-1]["images_per_s"] / rows[0]["images_per_s"]
        memory = rows[-1]["peak_mb"] - rows[0]["peak_mb"]
        print(
            f"\n{rows[-1]['images']:,} vs {rows[0]['images']:,} images: images/s x {speed:.2f}, "
            f"peak memory {memory:+.0f} MB."
        )


if __name__ == "__main__":
    main()
