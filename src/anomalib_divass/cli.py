"""The ``anomalib-divass`` command: anomalib's command line with the plugin loaded, plus the plugin's tools.

Every anomalib subcommand (``train``, ``fit``, ``test``, ``predict``, ``export`` ...) is accepted with
``--model DivideAssemble`` and ``--data MVTec`` and behaves exactly as under ``anomalib`` (both entry points
apply :func:`anomalib_divass.compat.apply`). The plugin's own subcommands:

* ``demo``: the README's main job on the embedded demo dataset;
* ``leaderboard``: DivideAssemble next to PaDiM, PatchCore and others (see :mod:`.leaderboard`);
* ``granularity``: the block-size sweep on one category (see :mod:`.granularity`);
* ``predict-folder``: a folder of any size through an exported model into a CSV (see :mod:`.inference`);
* ``report``: a browsable HTML report of a test, predict or predict-folder run (see :mod:`.report`);
* ``config``: print the shipped config (``anomalib-divass config > divide_assemble.yaml``).

Example:
    anomalib-divass train --model DivideAssemble --data MVTec --data.root ../shared/datasets/mvtec_ad
    anomalib-divass demo
    anomalib-divass config > divide_assemble.yaml
"""

from __future__ import annotations

import sys

from .configs import config_path

__all__ = ["config_path", "main", "prepare_anomalib_cli"]

CONFIG_USAGE = """usage: anomalib-divass config [--path]

Print the shipped DivideAssemble config (YAML), or with --path where it is installed.

  anomalib-divass config > divide_assemble.yaml
  anomalib train --config divide_assemble.yaml --data.root ../shared/datasets/mvtec_ad --data.category bottle
"""


def _print_config(argv: list[str]) -> int:
    """``anomalib-divass config [--path]``; returns the exit status (2 for an unknown argument)."""
    if any(argument in {"-h", "--help"} for argument in argv):
        print(CONFIG_USAGE, end="")
        return 0
    unknown = [argument for argument in argv if argument != "--path"]
    if unknown:
        message = f"anomalib-divass config: error: unrecognized arguments: {' '.join(unknown)}"
        print(f"{CONFIG_USAGE}{message}", file=sys.stderr)
        return 2
    path = config_path()
    if argv:
        print(path)
    else:
        print(path.read_text(encoding="utf-8"), end="")
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
    from .granularity.callback import install_cli_choice  # noqa: PLC0415

    compat.apply(argv)
    install_cli_choice()  # --model.granularity auto: fit/train add the ChooseGranularity callback


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
    if command == "report":
        from .report.command import main as report  # noqa: PLC0415

        sys.exit(report(rest))
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
