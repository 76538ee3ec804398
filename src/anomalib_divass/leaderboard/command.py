r"""``anomalib-divass leaderboard``: train and test models on categories, write CSV, Markdown and charts.

Example:
    anomalib-divass leaderboard --root ../shared/datasets/mvtec_ad --categories bottle
    anomalib-divass leaderboard --root ../shared/datasets --categories magnetic_tile --models DAAD PaDiM \\
        --backbone-weights resnet18=/models/resnet18.safetensors

Exit code 0 when every pair finished, 1 when a pair failed (the run still finishes the others and
writes ``leaderboard_INCOMPLETE.*``), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..models.divide_assemble.lightning_model import DAAD_PLUS_LATENT_WEIGHT
from .models import (
    DEFAULT_CONFIG,
    MODELS,
    PATCHCORE_CORESET_RATIO,
    DivideAssembleConfig,
    LeaderboardSettings,
    UnknownModelError,
    resolve_models,
)

__all__ = ["main"]


def _backbone_weights(values: Sequence[str]) -> dict[str, Path]:
    weights = {}
    for value in values:
        backbone, separator, path = value.partition("=")
        if not separator or not backbone or not path:
            msg = f"--backbone-weights takes BACKBONE=PATH (e.g. resnet18=/models/resnet18.pth), not '{value}'."
            raise argparse.ArgumentTypeError(msg)
        if not Path(path).is_file():
            msg = f"Backbone weights file '{path}' (for {backbone}) does not exist."
            raise argparse.ArgumentTypeError(msg)
        weights[backbone] = Path(path)
    return weights


def _model_epochs(values: Sequence[str]) -> dict[str, int]:
    epochs = {}
    for value in values:
        model, _, number = value.partition("=")
        (name,) = resolve_models([model])[-1:]
        if not number.isdigit() or int(number) < 1 or not MODELS[name].trained or MODELS[name].rescores:
            msg = f"--model-epochs takes TRAINED_MODEL=EPOCHS with EPOCHS >= 1 (e.g. GANomaly=5), not '{value}'."
            raise argparse.ArgumentTypeError(msg)
        epochs[name] = int(number)
    return epochs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomalib-divass leaderboard",
        description=(
            "Train and test models on MVTec-layout categories with anomalib's Engine; write per-category and "
            "mean image/pixel AUROC, F1, PRO, training time, inference images/s and model size as CSV, "
            "Markdown and PNG charts. Finished pairs are stored at once: run the same command again to resume."
        ),
    )
    parser.add_argument("--root", type=Path, default=None, help="dataset root holding the category folders")
    parser.add_argument(
        "--categories", nargs="+", required=True, help="category names under --root, or category folders"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        help=f"models to compare, run in this order (default: {' '.join(MODELS)})",
    )
    parser.add_argument("--output", type=Path, default=Path("results/leaderboard"), help="run folder (resumable)")
    parser.add_argument(
        "--report-dir", type=Path, default=None, help="where CSV, Markdown and charts go (default: --output)"
    )
    parser.add_argument(
        "--daad-config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="DivideAssemble config (model arguments, epochs, batch sizes, seed); default: the shipped one, "
        "printed by `anomalib-divass config` (save it, edit it, pass it here)",
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="epochs of every trained model (DAAD, AE, GANomaly); default: the config's",
    )
    parser.add_argument(
        "--model-epochs",
        nargs="+",
        default=[],
        metavar="MODEL=EPOCHS",
        help="epochs of single trained models, e.g. GANomaly=5 (its rows then say so)",
    )
    parser.add_argument(
        "--latent-weight",
        type=float,
        default=DAAD_PLUS_LATENT_WEIGHT,
        help=f"latent_weight of DAAD+, in (0, 1] (default {DAAD_PLUS_LATENT_WEIGHT}, the model's own)",
    )
    parser.add_argument(
        "--backbone-weights",
        nargs="+",
        default=[],
        metavar="BACKBONE=PATH",
        help="local timm weights per backbone (resnet18 for PaDiM, wide_resnet50_2 for PatchCore); "
        "without them those backbones are untrained and their rows say so",
    )
    parser.add_argument(
        "--patchcore-coreset-ratio",
        type=float,
        default=PATCHCORE_CORESET_RATIO,
        help=f"PatchCore coreset sampling ratio (anomalib default {PATCHCORE_CORESET_RATIO}; lower is faster on CPU)",
    )
    parser.add_argument("--num-workers", type=int, default=0, help="data-loading workers (0: load in the main process)")
    return parser


def main(argv: Sequence[str] = ()) -> int:
    """Run the leaderboard; return the exit code."""
    parser = _parser()
    args = parser.parse_args(list(argv))
    try:
        models = resolve_models(args.models)
        backbone_weights = _backbone_weights(args.backbone_weights)
        model_epochs = _model_epochs(args.model_epochs)
        if not 0 < args.latent_weight <= 1:
            parser.error("--latent-weight must be in (0, 1] (DAAD+ with weight 0 is DAAD).")
        if not 0 < args.patchcore_coreset_ratio <= 1:
            parser.error("--patchcore-coreset-ratio must be in (0, 1].")
        if args.max_epochs is not None and args.max_epochs < 1:
            parser.error("--max-epochs must be at least 1.")
        from .runner import check_categories  # noqa: PLC0415  (imports anomalib)

        categories = check_categories(args.root, args.categories)
        settings = LeaderboardSettings(
            daad=DivideAssembleConfig.load(args.daad_config),
            max_epochs=args.max_epochs,
            model_epochs=model_epochs,
            latent_weight=args.latent_weight,
            backbone_weights=backbone_weights,
            patchcore_coreset_ratio=args.patchcore_coreset_ratio,
            num_workers=args.num_workers,
        )
    except (UnknownModelError, argparse.ArgumentTypeError, OSError, ValueError) as error:
        print(f"anomalib-divass leaderboard: error: {error}", file=sys.stderr)
        return 2
    from .report import write_reports  # noqa: PLC0415
    from .runner import ResultStore, run_pairs  # noqa: PLC0415

    store = ResultStore(args.output)
    print(
        f"Leaderboard: {len(models)} models x {len(categories)} categories -> {args.output} "
        f"(models: {', '.join(models)}; categories: {', '.join(c.name for c in categories)})",
        flush=True,
    )
    results = run_pairs(models, categories, settings, store)
    written = write_reports(results, args.report_dir or args.output)
    failed = [r for r in results if r.status != "ok"]
    for path in written:
        print(f"wrote {path}")
    if failed:
        names = ", ".join(f"{r.model} on {r.category}" for r in failed)
        print(f"INCOMPLETE: {len(failed)} of {len(results)} pairs failed ({names}); run again to retry them.")
        return 1
    return 0
