#!/usr/bin/env bash
# Create .venv and install anomalib-divass with its test tools and the tested torch pair.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade "pip>=24" >/dev/null 2>&1 || true
# constraints.txt pins torch==2.14.1 / torchvision==0.29.1 (PyPI has no CPU torchvision build).
.venv/bin/python -m pip install --quiet --progress-bar off -c constraints.txt -e ".[test]"
echo "anomalib-divass installed in $(pwd)/.venv"
