"""Interpreter start-up cost of the plugin's ``.pth`` hook: ``python -c pass`` with and without it.

The hook makes ``anomalib --model DivideAssemble`` work by importing the plugin when anomalib's
CLI starts. Every other Python program in the environment must pay (almost) nothing for it.
This script times ``python -c pass`` with the installed ``anomalib_divass_autoload.pth`` and with
it moved aside (restored afterwards, even on Ctrl-C), alternating runs, and prints the medians.
For scale it also times the eager alternative (``import anomalib_divass`` at start).

Example:
    python benchmarks/startup.py --runs 30
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

PTH = Path(sysconfig.get_paths()["purelib"]) / "anomalib_divass_autoload.pth"


def time_command(command: list[str]) -> float:
    """Seconds one run of ``command`` takes."""
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def main() -> None:
    """Print median start-up times with and without the hook."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    if not PTH.is_file():
        sys.exit(f"{PTH} not found: install the package first (pip install -e .).")
    aside = PTH.with_suffix(".pth.aside")
    with_hook, without_hook = [], []
    try:
        for _ in range(args.runs):
            with_hook.append(time_command([sys.executable, "-c", "pass"]))
            PTH.rename(aside)
            without_hook.append(time_command([sys.executable, "-c", "pass"]))
            aside.rename(PTH)
    finally:
        if aside.exists():
            aside.rename(PTH)
    eager = statistics.median(time_command([sys.executable, "-c", "import anomalib_divass"]) for _ in range(3))
    with_ms, without_ms = statistics.median(with_hook) * 1e3, statistics.median(without_hook) * 1e3
    print(f"python -c pass, median of {args.runs} runs each:")
    print("| case | ms |")
    print("|---|---|")
    print(f"| without the plugin's .pth | {without_ms:.1f} |")
    print(f"| with the lazy hook (installed) | {with_ms:.1f} |")
    print(f"| difference | {with_ms - without_ms:+.1f} |")
    print(f"| eager `import anomalib_divass` (what the hook avoids) | {eager * 1e3:.0f} |")


if __name__ == "__main__":
    main()
