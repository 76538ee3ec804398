"""Helpers to run anomalib's command line in a subprocess and read what it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
METRIC_ROW = re.compile(r"│\s*(image_\w+|pixel_\w+)\s*│\s*([0-9.eE+-]+)\s*│")


def environment() -> dict[str, str]:
    """The environment of the commands: a wide terminal (so rich tables are not wrapped), no warnings."""
    return {**os.environ, "COLUMNS": "200", "PYTHONWARNINGS": "ignore"}


def run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command in :func:`environment`."""
    return subprocess.run(
        args, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=timeout, check=False
    )


def anomalib(*args: str, cwd: Path, command: str = "anomalib") -> subprocess.CompletedProcess:
    """Run ``anomalib <args>`` (or another console script of the venv)."""
    return run([str(BIN / command), *args], cwd=cwd)


def mvtec(root: Path, category: str = "washer") -> list[str]:
    """``--data MVTec`` arguments for a generated category."""
    return ["--data", "MVTec", "--data.root", str(root), "--data.category", category]


def metrics_of(output: str) -> dict[str, float]:
    """Test metrics from the table the CLI prints."""
    return {name: float(value) for name, value in METRIC_ROW.findall(output)}
