"""The ``anomalib-divass`` command: anomalib's command line with the plugin loaded.

Every anomalib subcommand (``train``, ``fit``, ``test``, ``predict``, ``export`` ...) is
accepted with ``--model DivideAssemble`` and ``--data MVTec``; ``demo`` runs the README's
main job on the embedded demo dataset.

Example:
    anomalib-divass train --model DivideAssemble --data MVTec --data.root ../shared/datasets/mvtec_ad
    anomalib-divass demo
"""

from __future__ import annotations

import sys

import anomalib_divass  # noqa: F401  (registers DivideAssemble and MVTec)


def main() -> None:
    """Run a plugin subcommand, or anomalib's command line for every other one."""
    if len(sys.argv) > 1 and sys.argv[1] == "demo":
        from .tools.demo import run_demo  # noqa: PLC0415

        run_demo(sys.argv[2:])
        return
    from anomalib.cli.cli import main as anomalib_main  # noqa: PLC0415

    anomalib_main()


if __name__ == "__main__":
    main()
