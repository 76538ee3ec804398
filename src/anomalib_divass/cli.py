"""The ``anomalib-divass`` command: anomalib's command line with the plugin loaded.

Every anomalib subcommand (``train``, ``fit``, ``test``, ``predict``, ``export`` ...) is
accepted with ``--model DivideAssemble`` and ``--data MVTec``; ``demo`` runs the README's
main job on the embedded demo dataset; ``leaderboard`` compares models (see ``leaderboard``);
``granularity`` sweeps the block size on one category (see ``granularity``);
``predict-folder`` scores a folder of any size with an exported model, streaming into a CSV
(see ``inference``).

Example:
    anomalib-divass train --model DivideAssemble --data MVTec --data.root ../shared/datasets/mvtec_ad
    anomalib-divass demo
    anomalib-divass leaderboard --root ../shared/datasets/mvtec_ad --categories bottle
    anomalib-divass granularity --data.root ../shared/datasets/mvtec_ad --data.category bottle
    anomalib-divass predict-folder --model results/weights/openvino/model.xml --data images/ --resume
"""

from __future__ import annotations

import sys

import anomalib_divass  # noqa: F401  (registers DivideAssemble and MVTec)


def install_seed_everything() -> None:
    """Make anomalib's ``--seed_everything`` seed, as its help says (anomalib 2.7 parses it, never seeds).

    Wraps ``AnomalibCLI.instantiate_classes`` (once) to call Lightning's ``seed_everything`` with the
    option's value before the model is built: an int seeds with it, ``True`` (the default) with a random
    seed that Lightning also hands to the processes DDP starts (``PL_GLOBAL_SEED``), ``False`` not at all.
    Does nothing unless anomalib's command line is loaded.
    """
    module = sys.modules.get("anomalib.cli.cli")
    if module is None or getattr(module.AnomalibCLI.instantiate_classes, "_seeds", False):
        return
    instantiate_classes = module.AnomalibCLI.instantiate_classes

    def seeded(self: object) -> None:
        seed = self._get(self.config, "seed_everything")  # type: ignore[attr-defined]
        if seed is not None and seed is not False:
            from lightning.pytorch import seed_everything  # noqa: PLC0415

            seed_everything(None if seed is True else int(seed), workers=True)
        instantiate_classes(self)

    seeded._seeds = True  # type: ignore[attr-defined]
    module.AnomalibCLI.instantiate_classes = seeded


def main() -> None:
    """Run a plugin subcommand, or anomalib's command line for every other one."""
    if len(sys.argv) > 1 and sys.argv[1] == "demo":
        from .tools.demo import run_demo  # noqa: PLC0415

        run_demo(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "granularity":
        from .granularity.command import main as granularity_main  # noqa: PLC0415

        granularity_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "predict-folder":
        from .inference import main as predict_folder  # noqa: PLC0415

        sys.exit(predict_folder(sys.argv[2:], prog="anomalib-divass predict-folder"))
    if len(sys.argv) > 1 and sys.argv[1] == "leaderboard":
        from .leaderboard import main as leaderboard  # noqa: PLC0415

        sys.exit(leaderboard(sys.argv[2:]))
    from anomalib.cli.cli import main as anomalib_main  # noqa: PLC0415

    anomalib_main()


if __name__ == "__main__":
    main()
