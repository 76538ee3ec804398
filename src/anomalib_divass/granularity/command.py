"""``anomalib-divass granularity``: sweep the block size on one category, plot it, choose one.

Trains every setting once (uniform block sizes, the default, the vanilla autoencoder) on the
normal training images minus a held-out part, scores the real test set with DAAD and DAAD+ and
the held-out images with synthetic defects, and writes ``granularity.csv``, ``errors.png``,
``auroc.png`` and ``summary.md`` (the tables, and the automatic choice against the oracle and
the default) into ``--out``. Re-running the same command resumes an interrupted sweep.

Example:
    anomalib-divass granularity --data.root ../shared/datasets/mvtec_ad --data.category bottle \
        --epochs 25 --out docs/granularity/bottle
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data import MVTec
from ..models import DivideAssemble
from .auto import CRITERIA, DEFAULT_AUTO_BLOCK_SIZES, choose_setting, oracle_setting
from .plots import plot_sweep
from .settings import DEFAULT_GRANULARITY, GranularitySetting, parse_block_size, sweep_settings
from .sweep import read_rows, run_sweep

__all__ = ["main", "summary_markdown"]


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="anomalib-divass granularity",
        description="Sweep DivideAssemble's block size on one category (MVTec AD layout).",
    )
    parser.add_argument("--data.root", dest="root", type=Path, required=True, help="folder of the category folders")
    parser.add_argument("--data.category", dest="category", required=True, help="category folder")
    parser.add_argument("--epochs", type=int, default=25, help="training epochs per setting (default 25)")
    parser.add_argument(
        "--block_sizes",
        nargs="+",
        type=parse_block_size,
        default=list(DEFAULT_AUTO_BLOCK_SIZES),
        help="uniform block sides per scale, powers of two, and/or 'whole' (default: 1 2 4 8 16 32 whole)",
    )
    parser.add_argument("--no_default", action="store_true", help="leave out the default granularity")
    parser.add_argument("--no_vanilla", action="store_true", help="leave out the vanilla autoencoder")
    parser.add_argument("--latent_weight", type=float, default=0.01, help="latent weight of DAAD+ (0: DAAD only)")
    parser.add_argument("--holdout", type=float, default=0.2, help="fraction of training images held out (0.2)")
    parser.add_argument("--max_train_images", type=int, default=None, help="train on a random subset this large")
    parser.add_argument("--image_size", type=int, default=256, help="square input side (default 256)")
    parser.add_argument("--channels", type=int, nargs="+", default=None, help="encoder channels (model default)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_workers", type=int, default=0, help="data-loading workers (default 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/granularity"), help="folder for CSV, plots, summary")
    parser.add_argument(
        "--report_only", action="store_true", help="only redraw plots and summary from the CSV in --out (no training)"
    )
    return parser.parse_args(list(argv))


def _format(value: Any, digits: int = 3) -> str:  # noqa: ANN401
    value = float(value)
    if math.isnan(value):
        return "-"
    return f"{value:.2e}" if abs(value) < 0.01 and value != 0 else f"{value:.{digits}f}"


def summary_markdown(rows: Sequence[Mapping[str, Any]], title: str) -> str:
    """The sweep as Markdown: one table per variant, then auto vs oracle vs default vs vanilla.

    Args:
        rows: Sweep rows of every setting and variant.
        title: Dataset name for the headings.

    Returns:
        Markdown text.

    """
    lines = []
    first = rows[0]
    lines.append(
        f"Trained {int(first['epochs'])} epochs per setting on {int(first['train_images'])} normal training images; "
        f"{int(first['heldout_images'])} held out for synthetic defects; {int(first['test_images'])} test images."
    )
    variants = list(dict.fromkeys(str(row["variant"]) for row in rows))
    for variant in variants:
        lines += [
            "",
            f"### {title}, {variant}",
            "",
            "| setting | granularity | normal error | abnormal error | gap | image AUROC | pixel AUROC "
            "| synthetic image / pixel AUROC | train s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            if row["variant"] != variant:
                continue
            lines.append(
                f"| {row['setting']} | {row['granularity']} | {_format(row['normal_error'])} | "
                f"{_format(row['abnormal_error'])} | {_format(row['error_gap'])} | {_format(row['image_AUROC'])} | "
                f"{_format(row['pixel_AUROC'])} | {_format(row['synthetic_image_AUROC'])} / "
                f"{_format(row['synthetic_pixel_AUROC'])} | {float(row['train_seconds']):.0f} |"
            )
    lines += [
        "",
        f"### {title}: automatic choice (synthetic defects only) vs oracle (real test labels) vs default",
        "",
        "| variant | choice | setting | image AUROC | pixel AUROC |",
        "|---|---|---|---|---|",
    ]
    by_name = {(str(row["setting"]), str(row["variant"])): row for row in rows}
    for variant in variants:
        picks = {
            f"auto ({criterion})": by_name[(choose_setting(rows, variant, criterion).setting, variant)]
            for criterion in CRITERIA
        }
        picks["oracle (test labels)"] = oracle_setting(rows, variant)
        for name in ("default", "vanilla AE"):
            if (name, variant) in by_name:
                picks[name] = by_name[(name, variant)]
        for choice, row in picks.items():
            lines.append(
                f"| {variant} | {choice} | {row['setting']} | {_format(row['image_AUROC'])} | "
                f"{_format(row['pixel_AUROC'])} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Run the sweep command; returns the rows.

    Args:
        argv: Command-line arguments after ``granularity``.

    Returns:
        The sweep rows.

    """
    args = _parse(argv)
    image_size = (args.image_size, args.image_size)
    model_arguments: dict[str, Any] = {}
    if image_size != (256, 256):
        model_arguments["pre_processor"] = DivideAssemble.configure_pre_processor(image_size)
    if args.channels:
        model_arguments["channels"] = args.channels
    num_scales = len(args.channels or DEFAULT_GRANULARITY)
    default = DEFAULT_GRANULARITY if not args.no_default and num_scales == len(DEFAULT_GRANULARITY) else None
    settings = sweep_settings(args.block_sizes, image_size, num_scales, default, vanilla=not args.no_vanilla)
    if args.report_only:
        rows = read_rows(args.out / "granularity.csv")
        if not rows:
            msg = f"--report_only needs a sweep in {args.out}: no granularity.csv there. Run the sweep first."
            raise SystemExit(msg)
        return write_report(rows, settings, args.out, args.category)
    resize = DivideAssemble.configure_pre_processor(image_size).transform
    datamodule = MVTec(root=args.root, category=args.category, num_workers=args.num_workers)
    datamodule.setup()
    train, test = datamodule.train_data, datamodule.test_data
    train.augmentations = resize
    test.augmentations = resize
    latent_weights = {"DAAD": 0.0}
    if args.latent_weight > 0:
        latent_weights["DAAD+"] = args.latent_weight
    args.out.mkdir(parents=True, exist_ok=True)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in {"out", "report_only"}}
    config_path = args.out / "config.json"
    if config_path.is_file():
        saved = json.loads(config_path.read_text())
        changed = {k: (saved.get(k), v) for k, v in config.items() if k != "block_sizes" and saved.get(k) != v}
        if changed:
            msg = (
                f"{args.out} holds a sweep with other settings ({changed}, as saved vs now): pass another --out, "
                f"or the same arguments to resume it."
            )
            raise SystemExit(msg)
    config_path.write_text(json.dumps(config, indent=1))

    def report(setting: Any, new_rows: list[dict[str, Any]]) -> None:  # noqa: ANN401
        for row in new_rows:
            print(
                f"{setting.name:10s} {row['variant']:5s} image AUROC {row['image_AUROC']:.3f} pixel AUROC "
                f"{row['pixel_AUROC']:.3f} normal/abnormal error {row['normal_error']:.2e}/{row['abnormal_error']:.2e}"
                f" synthetic {row['synthetic_image_AUROC']:.3f}/{row['synthetic_pixel_AUROC']:.3f} "
                f"({row['train_seconds']:.0f} s training)",
                flush=True,
            )

    # Train the cheap settings first, the slow extremes (pixel-wise, whole map) last: a sweep cut short
    # still has the default, the vanilla autoencoder and the middle of the axis. Tables keep the axis order.
    slow = {"k=1", "whole map"}
    rows = run_sweep(
        train,
        sorted(settings, key=lambda setting: setting.name in slow),
        args.epochs,
        test_dataset=test,
        latent_weights=latent_weights,
        holdout=args.holdout,
        csv_path=args.out / "granularity.csv",
        model_arguments=model_arguments,
        batch_size=args.batch_size,
        seed=args.seed,
        max_train_images=args.max_train_images,
        on_setting=report,
    )
    return write_report(rows, settings, args.out, args.category)


def write_report(
    rows: list[dict[str, Any]], settings: Sequence[GranularitySetting], out: Path, title: str
) -> list[dict[str, Any]]:
    """Sort the rows into the settings' order, draw the plots, write and print the summary.

    Args:
        rows: Sweep rows.
        settings: The settings, in axis order.
        out: Output folder.
        title: Dataset name.

    Returns:
        The sorted rows.

    """
    order = [setting.name for setting in settings]
    rows = sorted((row for row in rows if row["setting"] in order), key=lambda row: order.index(row["setting"]))
    plot_sweep(rows, out, title=title)
    summary = summary_markdown(rows, title)
    (out / "summary.md").write_text(summary)
    print(summary)
    for variant in dict.fromkeys(str(row["variant"]) for row in rows):
        print(f"Automatic choice ({variant}): {choose_setting(rows, variant).reason}")
    print(f"Written: {out / 'granularity.csv'}, {out / 'errors.png'}, {out / 'auroc.png'}, {out / 'summary.md'}")
    return rows
