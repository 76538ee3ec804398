"""``anomalib-divass granularity``: sweep the block size on one category, plot it; ``granularity choose``: choose it.

``granularity`` trains every setting once (uniform block sizes, the default, the vanilla autoencoder)
on the normal training images minus a held-out part, scores the real test set with DAAD and DAAD+ and
the held-out images with synthetic defects, and writes ``granularity.csv``, ``errors.png``,
``auroc.png`` and ``summary.md`` (the tables, and the automatic choice against the oracle and the
default) into ``--out``. Re-running the same command resumes an interrupted sweep.

``granularity choose`` makes the automatic choice alone, as ``--model.granularity auto`` does before
training (same candidates, same defaults as :class:`~.callback.ChooseGranularity`), and prints, or writes
with ``--output``, a config snippet with the chosen block sizes for ``anomalib train --config``.

Flags follow anomalib's: ``--data.<name>`` for the data, ``--model.<name>`` for any ``DivideAssemble``
argument (``--model.channels [8,16]``), ``--trainer.accelerator`` for the device; the others belong to
the tool.

Example:
    anomalib-divass granularity --data.root ../shared/datasets/mvtec_ad --data.category bottle \
        --epochs 25 --out docs/granularity/bottle
    anomalib-divass granularity choose --data.root ../shared/datasets/mvtec_ad --data.category bottle \
        --output bottle_granularity.yaml
    anomalib train --config bottle_granularity.yaml --data MVTec --data.root ../shared/datasets/mvtec_ad \
        --data.category bottle
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from ..data import MVTec
from ..models import DivideAssemble
from ..models.divide_assemble.lightning_model import DAAD_PLUS_LATENT_WEIGHT, DEFAULT_GRANULARITY
from .auto import (
    CRITERIA,
    DEFAULT_AUTO_BLOCK_SIZES,
    DEFAULT_AUTO_EPOCHS,
    DEFAULT_CRITERION,
    GranularityChoice,
    auto_granularity,
    choose_setting,
    oracle_setting,
)
from .evaluation import DEFAULT_BATCH_SIZE, model_defaults, resolve_device
from .plots import plot_sweep
from .settings import GranularitySetting, parse_block_size, sweep_settings
from .sweep import read_rows, run_sweep
from .synthetic import DEFAULT_HOLDOUT

__all__ = ["choice_config", "choose", "main", "summary_markdown"]

# Model arguments the tools set themselves: the granularity (swept or chosen), and in the sweep the
# variant (DAAD for the block memories, AE+Skip for the vanilla autoencoder; DAAD+ is scored from DAAD).
CHOSEN = ("granularity",)
SWEPT = ("granularity", "variant")
# The model's default input side (the resize of its default pre-processor).
DEFAULT_IMAGE_SIDE = int(DivideAssemble.configure_pre_processor().transform(torch.zeros(1, 3, 1, 1)).shape[-1])
SWEEP_EPOCHS = 25


def _value(text: str) -> Any:  # noqa: ANN401
    """A ``--model.<name>`` value, read as YAML like anomalib's command line does (``[8,16]``, ``false``, ``0.1``)."""
    return yaml.safe_load(text)


def _add_common_arguments(
    parser: argparse.ArgumentParser, excluded: Sequence[str], model_overrides: Mapping[str, Any] | None = None
) -> None:
    """The ``--data.*``, ``--model.*`` (but ``excluded``), ``--trainer.accelerator`` and shared tool flags."""
    parser.add_argument("--data.root", dest="root", type=Path, required=True, help="folder of the category folders")
    parser.add_argument("--data.category", dest="category", required=True, help="category folder (MVTec AD layout)")
    parser.add_argument(
        "--data.train_batch_size", dest="batch_size", type=int, default=DEFAULT_BATCH_SIZE, help="training batch size"
    )
    parser.add_argument("--data.num_workers", dest="num_workers", type=int, default=0, help="data-loading workers")
    overrides = dict(model_overrides or {})
    for name, default in model_defaults().items():
        if name in excluded:
            continue
        parser.add_argument(
            f"--model.{name}",
            dest=f"model.{name}",
            type=_value,
            default=overrides.get(name),
            metavar="VALUE",
            help=f"DivideAssemble's {name} (default {overrides.get(name, default)!r})",
        )
    parser.add_argument(
        "--trainer.accelerator",
        dest="accelerator",
        default="auto",
        help="device of the trainings: auto (a GPU if there is one), cpu, cuda, cuda:1, mps (default auto)",
    )
    parser.add_argument(
        "--block_sizes",
        nargs="+",
        type=parse_block_size,
        default=list(DEFAULT_AUTO_BLOCK_SIZES),
        help="uniform block sides per scale, powers of two, and/or 'whole' (default: "
        + " ".join(str(size) for size in DEFAULT_AUTO_BLOCK_SIZES)
        + ")",
    )
    parser.add_argument(
        "--holdout", type=float, default=DEFAULT_HOLDOUT, help=f"fraction held out (default {DEFAULT_HOLDOUT})"
    )
    parser.add_argument(
        "--image_size", type=int, default=DEFAULT_IMAGE_SIDE, help=f"square input side (default {DEFAULT_IMAGE_SIDE})"
    )
    parser.add_argument("--seed", type=int, default=0)


def _model_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--model.<name>`` values given (or set by the command), checked by building the model once.

    Raises:
        SystemExit: If the model refuses one (the message names the flag and its range).

    """
    arguments = {
        name.removeprefix("model."): value
        for name, value in vars(args).items()
        if name.startswith("model.") and value is not None
    }
    try:
        components = dict.fromkeys(("pre_processor", "post_processor", "evaluator", "visualizer"), False)
        DivideAssemble(granularity="auto", **arguments, **components)
    except (TypeError, ValueError) as error:
        raise SystemExit(str(error)) from error
    return arguments


def _training_images(args: argparse.Namespace, image_size: tuple[int, int]) -> tuple[Any, Any]:
    """The category's normal training images and its test images, resized to ``image_size``."""
    resize = DivideAssemble.configure_pre_processor(image_size).transform
    datamodule = MVTec(root=args.root, category=args.category, num_workers=args.num_workers)
    datamodule.setup()
    train, test = datamodule.train_data, datamodule.test_data
    train.augmentations = resize
    test.augmentations = resize
    return train, test


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="anomalib-divass granularity",
        description="Sweep DivideAssemble's block size on one category (MVTec AD layout). "
        "`anomalib-divass granularity choose --help`: the automatic choice alone.",
    )
    # Here --model.latent_weight is DAAD+'s weight: DAAD (0) is always scored, DAAD+ too when it is > 0.
    _add_common_arguments(parser, SWEPT, {"latent_weight": DAAD_PLUS_LATENT_WEIGHT})
    parser.add_argument(
        "--epochs", type=int, default=SWEEP_EPOCHS, help=f"training epochs per setting (default {SWEEP_EPOCHS})"
    )
    parser.add_argument("--no_default", action="store_true", help="leave out the default granularity")
    parser.add_argument("--no_vanilla", action="store_true", help="leave out the vanilla autoencoder")
    parser.add_argument("--max_train_images", type=int, default=None, help="train on a random subset this large")
    parser.add_argument("--out", type=Path, default=Path("results/granularity"), help="folder for CSV, plots, summary")
    parser.add_argument(
        "--report_only", action="store_true", help="only redraw plots and summary from the CSV in --out (no training)"
    )
    return parser.parse_args(list(argv))


def _parse_choose(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="anomalib-divass granularity choose",
        description="Choose DivideAssemble's block sizes from the normal training images of one category, as "
        "--model.granularity auto does before training, and write them as a config snippet.",
    )
    _add_common_arguments(parser, CHOSEN)
    parser.add_argument(
        "--epochs",
        type=int,
        default=DEFAULT_AUTO_EPOCHS,
        help=f"training epochs of every candidate (default {DEFAULT_AUTO_EPOCHS})",
    )
    parser.add_argument(
        "--criterion", choices=list(CRITERIA), default=DEFAULT_CRITERION, help=f"default {DEFAULT_CRITERION}"
    )
    parser.add_argument("--output", type=Path, default=None, help="write the config snippet (YAML) to this file")
    return parser.parse_args(list(argv))


def choice_config(
    choice: GranularityChoice, model_arguments: Mapping[str, Any] | None = None, image_side: int = DEFAULT_IMAGE_SIDE
) -> str:
    """The config snippet of a choice: ``model`` with the chosen ``granularity`` (and the other arguments given).

    Args:
        choice: The choice.
        model_arguments: Other ``DivideAssemble`` arguments the choice was made with; they belong with it.
        image_side: The square input side the choice was made for.

    Returns:
        YAML text for ``anomalib train --config`` (comments say why and for which input).

    Example:
        >>> choice = GranularityChoice("k=4", (4, 4), 0.002, (("k=4", 0.002), ("k=8", 0.001)))
        >>> print(choice_config(choice, {"channels": [8, 16]}))  # doctest: +ELLIPSIS
        # Chosen by `anomalib-divass granularity choose` for 256 x 256 inputs: granularity [4, 4] (k=4) leaves ...
        model:
          class_path: anomalib_divass.DivideAssemble
          init_args:
            granularity: [4, 4]
            channels: [8, 16]
        <BLANKLINE>

    """
    init_args = {"granularity": [int(k) for k in choice.granularity], **dict(model_arguments or {})}
    config = {"model": {"class_path": "anomalib_divass.DivideAssemble", "init_args": init_args}}
    header = (
        f"# Chosen by `anomalib-divass granularity choose` for {image_side} x {image_side} inputs: {choice.reason}\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


def choose(argv: Sequence[str] = ()) -> GranularityChoice:
    """Run ``anomalib-divass granularity choose``: print (and with ``--output`` write) the chosen block sizes.

    Args:
        argv: Command-line arguments after ``choose``.

    Returns:
        The choice.

    """
    args = _parse_choose(argv)
    model_arguments = _model_arguments(args)
    image_size = (args.image_size, args.image_size)
    train, _ = _training_images(args, image_size)
    choice = auto_granularity(
        train,
        image_size,
        epochs=args.epochs,
        model_arguments=model_arguments,
        block_sizes=args.block_sizes,
        holdout=args.holdout,
        seed=args.seed,
        criterion=args.criterion,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=resolve_device(args.accelerator),
    )
    text = choice_config(choice, model_arguments, args.image_size)
    print(text, end="")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(
            f"Written: {args.output}. Train with it: anomalib train --config {args.output} --data MVTec "
            f"--data.root {args.root} --data.category {args.category}"
            + ("" if args.image_size == DEFAULT_IMAGE_SIDE else " (and the same input size)")
        )
    return choice


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


def main(argv: Sequence[str] = ()) -> list[dict[str, Any]] | GranularityChoice:
    """Run the sweep command, or ``choose`` when it is the first argument.

    Args:
        argv: Command-line arguments after ``granularity``.

    Returns:
        The sweep rows, or the choice of ``choose``.

    """
    if argv and argv[0] == "choose":
        return choose(argv[1:])
    args = _parse(argv)
    image_size = (args.image_size, args.image_size)
    model_arguments = _model_arguments(args)
    daad_plus = float(model_arguments.pop("latent_weight"))  # the sweep scores DAAD, and DAAD+ at this weight
    num_scales = len(model_arguments.get("channels", model_defaults()["channels"]))
    default = DEFAULT_GRANULARITY if not args.no_default and num_scales == len(DEFAULT_GRANULARITY) else None
    settings = sweep_settings(args.block_sizes, image_size, num_scales, default, vanilla=not args.no_vanilla)
    if args.report_only:
        rows = read_rows(args.out / "granularity.csv")
        if not rows:
            msg = f"--report_only needs a sweep in {args.out}: no granularity.csv there. Run the sweep first."
            raise SystemExit(msg)
        return write_report(rows, settings, args.out, args.category)
    train, test = _training_images(args, image_size)
    latent_weights = {"DAAD": 0.0}
    if daad_plus > 0:
        latent_weights["DAAD+"] = daad_plus
    args.out.mkdir(parents=True, exist_ok=True)
    not_results = {"out", "report_only", "accelerator", "num_workers"}  # may change between resumed runs
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in not_results}
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
        num_workers=args.num_workers,
        device=resolve_device(args.accelerator),
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
