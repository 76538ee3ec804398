"""The ``anomalib-divass`` command: anomalib's command line with the plugin loaded.

Every anomalib subcommand (``train``, ``fit``, ``test``, ``predict``, ``export`` ...) is
accepted with ``--model DivideAssemble`` and ``--data MVTec``.

Example:
    anomalib-divass train --model DivideAssemble --data MVTec --data.root ../shared/datasets/mvtec_ad

"""

from __future__ import annotations

import anomalib_divass  # noqa: F401  (registers DivideAssemble and MVTec)


def main() -> None:
    """Run anomalib's command line."""
    from anomalib.cli.cli import main as anomalib_main  # noqa: PLC0415

    anomalib_main()


if __name__ == "__main__":
    main()
