"""Helpers to run anomalib's command line in a subprocess and read what it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
METRIC_ROW = re.compile(r"│\s*(image_\w+|pixel_\w+)\s*│\s*([0-9.eE+-]+)\s*│")


# Downloads fail at once (a closed local port as proxy): a missing dataset is never fetched by a test.
OFFLINE = {
    **dict.fromkeys(("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"), "http://127.0.0.1:9"),
    **dict.fromkeys(("no_proxy", "NO_PROXY"), ""),
}


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the commands: a wide terminal (so rich tables are not wrapped), no warnings."""
    return {**os.environ, "COLUMNS": "200", "PYTHONWARNINGS": "ignore", **(extra or {})}


def run(
    args: list[str], cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a command in :func:`environment` (with ``env`` added)."""
    return subprocess.run(
        args, cwd=cwd, env=environment(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def anomalib(
    *args: str, cwd: Path, command: str = "anomalib", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``anomalib <args>`` (or another console script of the venv)."""
    return run([str(BIN / command), *args], cwd=cwd, env=env)


def flat(text: str) -> str:
    """Join rich's wrapped traceback lines, so that messages can be searched as one string."""
    return " ".join(text.replace("│", " ").split())


def mvtec(root: Path, category: str = "washer") -> list[str]:
    """``--data MVTec`` arguments for a generated category."""
    return ["--data", "MVTec", "--data.root", str(root), "--data.category", category]


def metrics_of(output: str) -> dict[str, float]:
    """Test metrics from the table the CLI prints."""
    return {name: float(value) for name, value in METRIC_ROW.findall(output)}
