"""CPU speed benchmark of Divide-and-Assemble: training step, inference, memory, FLOPs.

Prints one markdown table measured at ``--image-size`` (default 256 x 256) with torch's
default thread count:

* training images/s: one full generator + discriminator step at batch 8, replicating
  ``DivideAssemble.training_step`` (same loss objects, same call order, two Adam
  optimizers from ``configure_optimizers``, the same finiteness checks) without a
  Lightning ``Trainer``; median over the steps after warm-up;
* inference images/s and latency at batch 1 and 8 (eval mode, ``torch.inference_mode``)
  for DAAD, DAAD+ (``variant="DAAD+"``, latent error in the map) and the vanilla autoencoder
  (``variant="AE+Skip"``, no memory);
* the process RSS high-water mark during each measurement (reset through
  ``/proc/self/clear_refs`` where the kernel allows it, otherwise the process peak so far);
* GFLOP per image from ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and
  matrix products only, 2 FLOPs per multiply-accumulate) and the achieved GFLOP/s, against
  the measured fp32 peak of a 2048 x 2048 matrix product;
* PASS/MISS against the targets: training >= 8 images/s, inference >= 30 images/s at batch 8.

Usage:
    python benchmarks/speed.py [--image-size 256] [--repeats N] [--latent-weight 0.0] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

try:
    import psutil
except ImportError:  # pragma: no cover - psutil ships with anomalib's dependencies
    psutil = None

TRAIN_BATCH = 8
TRAIN_TARGET = 8.0  # images/s
INFERENCE_TARGET = 30.0  # images/s at batch 8
INFERENCE_TARGET_BATCH = 8
DEFAULT_PLUS_WEIGHT = 0.1
MATMUL_SIZE = 2048
CONTENTION_WARNING_PERCENT = 10.0
MIN_TIMED_CALLS = 3
THREADING_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")


@dataclass
class Row:
    """One line of the result table.

    Attributes:
        name: What was measured.
        batch: Batch size ("" when not applicable).
        calls: Timed calls the median is taken over.
        images_per_s: Median throughput.
        median_ms: Median time per call (one step or one batch).
        best_ms: Fastest call (closest to the machine's speed when other processes compete).
        p90_ms: 90th percentile time per call.
        gflop_per_image: Counted GFLOP per image (conv + matmul, 2 x MACs).
        peak_rss_mib: RSS high-water mark during the measurement.
        target: Target throughput, or ``None``.
        gflops_override: GFLOP/s to show instead of GFLOP/image x images/s (matmul row).
        other_cpu_percent: CPU share other processes used during the measurement.
    """

    name: str
    batch: int | str
    calls: int | None
    images_per_s: float | None
    median_ms: float | None
    best_ms: float | None
    p90_ms: float | None
    gflop_per_image: float | None
    peak_rss_mib: float | None
    target: float | None = None
    gflops_override: float | None = None
    other_cpu_percent: float | None = None

    def achieved_gflops(self) -> float | None:
        """GFLOP/s reached: counted GFLOP per image times images per second."""
        if self.gflops_override is not None:
            return self.gflops_override
        if self.gflop_per_image is None or self.images_per_s is None:
            return None
        return self.gflop_per_image * self.images_per_s


# --------------------------------------------------------------------------- environment


def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (or ``platform.processor()``)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown"


def current_rss_mib() -> float:
    """Current resident set size of this process in MiB."""
    if psutil is not None:
        return psutil.Process().memory_info().rss / 2**20
    text = Path("/proc/self/status").read_text(encoding="utf-8")
    match = re.search(r"VmRSS:\s+(\d+)\s+kB", text)
    return int(match.group(1)) / 1024 if match else float("nan")


def peak_rss_mib() -> float:
    """RSS high-water mark of the process (``resource.getrusage``), in MiB."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the RSS high-water mark to the current RSS (Linux >= 4.0, ``clear_refs`` 5).

    Returns:
        ``True`` if the peak was reset, ``False`` if peaks are cumulative process peaks.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


class CpuMeter:
    """Share of the machine's CPU time that *other* processes used over an interval.

    Busy time of all CPUs from ``/proc/stat`` minus this process's own CPU time
    (``resource.getrusage``), divided by wall time x CPUs. A high share means the timings
    were taken while something else competed for the cores.
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()[1:]
        except OSError:
            return None
        ticks = [int(value) for value in fields[:8]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), busy, usage.ru_utime + usage.ru_stime

    def other_percent(self) -> float | None:
        """Percent of all CPUs used by other processes since construction."""
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        other = (end[1] - self.start[1]) - (end[2] - self.start[2])
        cpus = os.cpu_count() or 1
        return max(0.0, 100.0 * other / (wall * cpus)) if wall > 0 else None


# --------------------------------------------------------------------------- timing helpers


def time_calls(function: Callable[[], object], warmup: int, repeats: int, budget: float = float("inf")) -> list[float]:
    """Call ``function`` ``warmup`` times untimed, then up to ``repeats`` times timed.

    Args:
        function: What to time.
        warmup: Untimed calls first.
        repeats: Timed calls wanted.
        budget: Seconds after which timing stops early (keeps at least ``MIN_TIMED_CALLS``
            calls), so a slow or contended machine still finishes in reasonable time.

    Returns:
        The durations in seconds (``time.perf_counter``), at most ``repeats`` of them.
    """
    for _ in range(warmup):
        function()
    durations: list[float] = []
    began = time.perf_counter()
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        durations.append(time.perf_counter() - start)
        if len(durations) >= MIN_TIMED_CALLS and time.perf_counter() - began > budget:
            break
    return durations


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def matmul_peak_gflops(repeats: int) -> tuple[float, float]:
    """Best fp32 GFLOP/s of a ``2048 x 2048`` matrix product.

    Args:
        repeats: Timed products (best of them is kept).

    Returns:
        ``(best GFLOP/s, best time in ms)``.
    """
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(MATMUL_SIZE, MATMUL_SIZE, generator=generator)
    b = torch.rand(MATMUL_SIZE, MATMUL_SIZE, generator=generator)
    out = torch.empty(MATMUL_SIZE, MATMUL_SIZE)
    durations = time_calls(lambda: torch.mm(a, b, out=out), warmup=2, repeats=repeats)
    best = min(durations)
    return 2 * MATMUL_SIZE**3 / best / 1e9, best * 1e3


def count_gflop(function: Callable[[], object]) -> float:
    """GFLOP counted by ``FlopCounterMode`` during one call (conv + matmul, 2 x MACs)."""
    counter = FlopCounterMode(display=False)
    with counter:
        function()
    return counter.get_total_flops() / 1e9


# --------------------------------------------------------------------------- models


def build_module(latent_weight: float, use_memory: bool) -> torch.nn.Module:
    """The Lightning module with default network settings and no pre/post-processing.

    Args:
        latent_weight: 0 for DAAD, > 0 for DAAD+ (its share of the map).
        use_memory: ``False`` for the vanilla autoencoder (variant ``AE+Skip``).

    Returns:
        A ``DivideAssemble`` module.
    """
    from anomalib_divass import DivideAssemble

    torch.manual_seed(0)
    variant = "AE+Skip" if not use_memory else ("DAAD+" if latent_weight > 0 else "DAAD")
    weight = {"latent_weight": latent_weight} if variant == "DAAD+" else {}
    return DivideAssemble(
        variant=variant,
        **weight,
        pre_processor=False,
        post_processor=False,
        evaluator=False,
        visualizer=False,
    )


def make_training_step(module: torch.nn.Module, images: torch.Tensor) -> Callable[[], None]:
    """A closure running the real ``DivideAssemble.training_step`` without a ``Trainer``.

    ``self.optimizers()`` returns the optimizers of ``configure_optimizers``,
    ``self.manual_backward(loss)`` becomes ``loss.backward()`` (what Lightning does for
    32-bit CPU training) and ``log_dict`` does nothing; everything else is the module's own code.

    Args:
        module: The ``DivideAssemble`` module, put in training mode here.
        images: The batch ``(B, C, H, W)``.

    Returns:
        The step function.
    """
    from anomalib.data import ImageBatch

    module.train()
    optimizers = module.configure_optimizers()
    module.optimizers = lambda: optimizers
    module.manual_backward = lambda loss: loss.backward()
    module.log_dict = lambda *args, **kwargs: None
    batch = ImageBatch(image=images)

    def step() -> None:
        module.training_step(batch, 0)

    return step


def measure(
    name: str,
    function: Callable[[], object],
    batch: int,
    warmup: int,
    repeats: int,
    gflop_per_image: float | None,
    target: float | None = None,
    budget: float = float("inf"),
) -> Row:
    """Time ``function`` and record the RSS peak during the timing.

    Args:
        name: Row label.
        function: One call processes ``batch`` images.
        batch: Images per call.
        warmup: Untimed calls.
        repeats: Timed calls.
        gflop_per_image: Counted GFLOP per image.
        target: Images/s target, if any.
        budget: Seconds of timed calls after which timing stops early.

    Returns:
        The table row.
    """
    reset_peak_rss()
    meter = CpuMeter()
    durations = time_calls(function, warmup, repeats, budget)
    median = statistics.median(durations)
    return Row(
        name=name,
        batch=batch,
        calls=len(durations),
        images_per_s=batch / median,
        median_ms=median * 1e3,
        best_ms=min(durations) * 1e3,
        p90_ms=percentile(durations, 0.9) * 1e3,
        gflop_per_image=gflop_per_image,
        peak_rss_mib=peak_rss_mib(),
        target=target,
        other_cpu_percent=meter.other_percent(),
    )


def benchmark_training(
    name: str, latent_weight: float, use_memory: bool, size: int, warmup: int, repeats: int, budget: float
) -> Row:
    """Training images/s of one generator + discriminator step at batch 8."""
    module = build_module(latent_weight, use_memory)
    images = torch.rand(TRAIN_BATCH, 3, size, size, generator=torch.Generator().manual_seed(1))
    step = make_training_step(module, images)
    step()  # first call allocates Adam state outside the FLOP count
    gflop = count_gflop(step) / TRAIN_BATCH
    return measure(name, step, TRAIN_BATCH, warmup, repeats, gflop, target=TRAIN_TARGET, budget=budget)


def benchmark_inference(
    name: str,
    latent_weight: float,
    use_memory: bool,
    size: int,
    warmup: int,
    repeats: dict[int, int],
    budget: float,
) -> list[Row]:
    """Inference rows (one per batch size) of one model variant in eval mode."""
    module = build_module(latent_weight, use_memory)
    model = module.model.eval()
    rows = []
    images = torch.rand(max(repeats), 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        gflop = count_gflop(lambda: model(images[:1]))
        for batch, count in repeats.items():
            batch_images = images[:batch].contiguous()
            target = INFERENCE_TARGET if batch == INFERENCE_TARGET_BATCH else None
            rows.append(
                measure(
                    f"{name} inference",
                    lambda x=batch_images: model(x),
                    batch,
                    warmup,
                    count,
                    gflop,
                    target=target,
                    budget=budget,
                )
            )
    return rows


def profile_top_ops(function: Callable[[], object], steps: int, limit: int = 12) -> str:
    """Table of the operators taking most CPU self time over ``steps`` calls."""
    from torch.profiler import ProfilerActivity, profile

    function()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            function()
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=limit)


# --------------------------------------------------------------------------- output


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def verdict(row: Row) -> str:
    """``PASS``/``MISS`` against the row's target with the relative margin."""
    if row.target is None or row.images_per_s is None:
        return ""
    margin = (row.images_per_s / row.target - 1.0) * 100.0
    status = "PASS" if row.images_per_s >= row.target else "MISS"
    return f"{status} ({margin:+.0f} %)"


def render(rows: list[Row], peak_gflops: float) -> str:
    """The markdown table."""
    header = (
        "| measurement | batch | calls | images/s | median ms/call | best ms/call | p90 ms/call | GFLOP/image "
        "| GFLOP/s | % of matmul peak | peak RSS MiB | other procs CPU % | target images/s | status |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        achieved = row.achieved_gflops()
        fraction = None if achieved is None else 100.0 * achieved / peak_gflops
        lines.append(
            "| "
            + " | ".join(
                [
                    row.name,
                    str(row.batch),
                    "" if row.calls is None else str(row.calls),
                    _fmt(row.images_per_s),
                    _fmt(row.median_ms, 2),
                    _fmt(row.best_ms, 2),
                    _fmt(row.p90_ms, 2),
                    _fmt(row.gflop_per_image, 2),
                    _fmt(achieved),
                    _fmt(fraction),
                    _fmt(row.peak_rss_mib, 0),
                    _fmt(row.other_cpu_percent, 0),
                    "" if row.target is None else f">= {row.target:g}",
                    verdict(row),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=256, help="square input side (default 256)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed calls per measurement (training steps; inference batches at batch 8, 4x at batch 1); "
        "default 20, or 4 with --quick",
    )
    parser.add_argument(
        "--latent-weight",
        type=float,
        default=0.0,
        help="latent weight of the DAAD+ rows; 0 (default) uses 0.1. DAAD rows always use 0.",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="stop timing a measurement after this many seconds (at least 3 calls); default 12, or 2 with --quick",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run of about 30 s")
    parser.add_argument(
        "--profile", action="store_true", help="after the table, print the top operators of every missed target"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        Exit code 0.
    """
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    repeats = args.repeats if args.repeats is not None else (4 if args.quick else 20)
    warmup = 1 if args.quick else 3
    budget = args.max_seconds if args.max_seconds is not None else (2.0 if args.quick else 12.0)
    plus_weight = args.latent_weight if args.latent_weight > 0 else DEFAULT_PLUS_WEIGHT
    size = args.image_size

    start = time.perf_counter()
    import anomalib_divass

    import_seconds = time.perf_counter() - start
    baseline_rss = current_rss_mib()
    peak_resettable = reset_peak_rss()

    print(
        f"torch {torch.__version__} | anomalib-divass {anomalib_divass.__version__} | "
        f"Python {platform.python_version()} | threads {torch.get_num_threads()} "
        f"(inter-op {torch.get_num_interop_threads()}) | CPUs visible {os.cpu_count()}"
    )
    print(f"CPU: {cpu_model()}")
    threading_env = ", ".join(f"{key}={os.environ.get(key, 'unset')}" for key in THREADING_VARIABLES)
    print(f"threading environment: {threading_env}")
    print(
        f"input {size} x {size}, warm-up {warmup}, up to {repeats} timed calls (4x at inference batch 1) "
        f"or {budget:g} s per measurement; "
        f"package import {import_seconds:.1f} s; RSS after import {baseline_rss:.0f} MiB"
    )

    run_meter = CpuMeter()
    matmul_meter = CpuMeter()
    peak_gflops, peak_ms = matmul_peak_gflops(repeats=5 if args.quick else 10)
    matmul_other = matmul_meter.other_percent()
    rows: list[Row] = []
    inference_repeats = {1: 4 * repeats, 8: repeats}
    variants = [("DAAD", 0.0, True), (f"DAAD+ (latent {plus_weight:g})", plus_weight, True), ("vanilla AE", 0.0, False)]
    for name, latent_weight, use_memory in variants:
        rows.extend(benchmark_inference(name, latent_weight, use_memory, size, warmup, inference_repeats, budget))
    rows.append(benchmark_training("DAAD training step (G + D)", 0.0, True, size, warmup, repeats, budget))
    if not args.quick:
        rows.append(benchmark_training("vanilla AE training step (G + D)", 0.0, False, size, warmup, repeats, budget))
    rows.append(
        Row(
            name=f"fp32 matmul {MATMUL_SIZE}^3 (best)",
            batch="",
            calls=5 if args.quick else 10,
            images_per_s=None,
            median_ms=None,
            best_ms=peak_ms,
            p90_ms=None,
            gflop_per_image=None,
            peak_rss_mib=None,
            gflops_override=peak_gflops,
            other_cpu_percent=matmul_other,
        )
    )

    print()
    print(render(rows, peak_gflops))
    print()
    peak_note = (
        "reset before each measurement via /proc/self/clear_refs, so it is the process peak during that "
        "measurement (imports and weights included)"
        if peak_resettable
        else "cumulative process peak (getrusage ru_maxrss) up to the end of that measurement"
    )
    print(
        f"Peak RSS: {peak_note}. GFLOP/image: FlopCounterMode, convolutions and matrix products only "
        "(2 FLOPs per multiply-accumulate; batch norm, activations, softmax, upsampling, Adam not counted); "
        f"training counts forward + backward of the whole step per image. Training ms/call is one step of "
        f"{TRAIN_BATCH} images; inference ms/call is one batch. Training is the same for DAAD and DAAD+ "
        "(latent_weight only changes the anomaly map)."
    )
    other = run_meter.other_percent()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(
        f"Total benchmark time: {time.perf_counter() - start:.0f} s; other processes used "
        f"{_fmt(other, 0)} % of the {os.cpu_count()} CPUs meanwhile (load average {load})."
    )
    if other is not None and other > CONTENTION_WARNING_PERCENT:
        print(
            f"WARNING: other processes used more than {CONTENTION_WARNING_PERCENT:g} % of the CPUs during the run; "
            "the timings understate this machine's speed (small batches most, through OpenMP barrier stalls). "
            "Re-run on an idle machine."
        )

    if args.profile:
        profile_missed(rows, size, plus_weight)
    return 0


def profile_missed(rows: list[Row], size: int, plus_weight: float) -> None:
    """Print the top operators (torch.profiler) of every row that missed its target."""
    for row in rows:
        if row.target is None or row.images_per_s is None or row.images_per_s >= row.target:
            continue
        print(f"\n### Profile of {row.name}, batch {row.batch}")
        memory = not row.name.startswith("vanilla")
        if "training" in row.name:
            module = build_module(0.0, memory)
            images = torch.rand(TRAIN_BATCH, 3, size, size)
            print(profile_top_ops(make_training_step(module, images), steps=3))
        else:
            weight = plus_weight if row.name.startswith("DAAD+") else 0.0
            model = build_module(weight, memory).model.eval()
            images = torch.rand(int(row.batch), 3, size, size)
            with torch.inference_mode():
                print(profile_top_ops(lambda m=model, x=images: m(x), steps=5))


if __name__ == "__main__":
    sys.exit(main())
