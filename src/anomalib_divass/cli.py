"""The ``anomalib-divass`` command: anomalib's command line with the plugin loaded, plus the plugin's tools.

Every anomalib subcommand (``train``, ``fit``, ``test``, ``predict``, ``export`` ...) is accepted with
``--model DivideAssemble`` and ``--data MVTec`` and behaves exactly as under ``anomalib`` (both entry points
apply :func:`anomalib_divass.compat.apply`). The plugin's own subcommands:

* ``demo``: the README's main job on the embedded demo dataset;
* ``leaderboard``: DivideAssemble next to PaDiM, PatchCore and others (see :mod:`.leaderboard`);
* ``granularity``: the block-size sweep on one category (see :mod:`.granularity`);
* ``predict-folder``: a folder of any size through an exported model into a CSV (see :mod:`.inference`);
* ``config``: print the shipped config (``anomalib-divass config > divide_assemble.yaml``).

Example:
    anomalib-divass train --model DivideAssemble --data MVTec --data.root ../shared/datasets/mvtec_ad
    anomalib-divass demo
    anomalib-divass config > divide_assemble.yaml
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

__all__ = ["config_path", "main", "prepare_anomalib_cli"]

SHIPPED_CONFIG = "divide_assemble.yaml"


def config_path(name: str = SHIPPED_CONFIG) -> Path:
    """Path of a config shipped inside the package (works from a wheel as from the repository).

    Args:
        name: File name in ``anomalib_divass/configs``.

    Returns:
        The file's path.

    Example:
        >>> config_path().name
        'divide_assemble.yaml'

    """
    return Path(str(resources.files("anomalib_divass") / "configs" / name))


def _print_config(argv: list[str]) -> int:
    if argv and argv[0] in {"-h", "--help"}:
        print("usage: anomalib-divass config [--path]\n\nPrint the shipped DivideAssemble config (YAML), or its path.")
        return 0
    path = config_path()
    print(path if "--path" in argv else path.read_text(encoding="utf-8"), end="\n" if "--path" in argv else "")
    return 0


def prepare_anomalib_cli(argv: list[str]) -> None:
    """Make anomalib's command line ready for the plugin; both entry points call this, so they behave alike.

    Called by :func:`main` (``anomalib-divass``) and by the ``.pth`` hook right after ``anomalib.cli.cli`` is
    imported (``anomalib``): imports the model and data alias (so ``--model DivideAssemble`` and ``--data MVTec``
    resolve) and applies :func:`anomalib_divass.compat.apply`.

    Args:
        argv: ``sys.argv``.

    """
    from . import compat, models  # noqa: F401, PLC0415  (models: --model DivideAssemble resolvable)
    from .data import MVTec  # noqa: F401, PLC0415  (--data MVTec resolvable)

    compat.apply(argv)


def main() -> None:
    """Run a plugin subcommand, or anomalib's command line for every other one."""
    command = sys.argv[1] if len(sys.argv) > 1 else None
    rest = sys.argv[2:]
    if command == "demo":
        from .demo.command import run_demo  # noqa: PLC0415

        run_demo(rest)
        return
    if command == "granularity":
        from .granularity.command import main as granularity_main  # noqa: PLC0415

        granularity_main(rest)
        return
    if command == "predict-folder":
        from .inference.command import main as predict_folder  # noqa: PLC0415

        sys.exit(predict_folder(rest, prog="anomalib-divass predict-folder"))
    if command == "leaderboard":
        from .leaderboard import main as leaderboard  # noqa: PLC0415

        sys.exit(leaderboard(rest))
    if command == "config":
        sys.exit(_print_config(rest))
    from anomalib.cli.cli import main as anomalib_main  # noqa: PLC0415

    prepare_anomalib_cli(sys.argv)
    anomalib_main()


if __name__ == "__main__":
    main()
