"""The report's pictures: a large JPEG and a small thumbnail per image, made with Pillow in parallel.

For a run of anomalib the picture is the visualizer's panel (image, reconstruction, ground truth, map overlay,
predicted mask). For ``predict-folder`` it is composed here: the image, the image with the predicted mask's
outline, and the mask. Pictures that are already there and newer than their source are kept, so a second
report of the same run (or of a run that grew) only makes the new ones.

Example:
    >>> picture_key("test/broken large/000.png", set())
    'test/broken_large/000'

"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .sources import ReportRow

__all__ = ["LARGE_FOLDER", "THUMBNAIL_FOLDER", "THUMBNAIL_HEIGHT", "Pictures", "make_pictures", "picture_key"]

THUMBNAIL_HEIGHT = 96  # pixels of a row's thumbnail strip
TILE = 256  # tile side of the panels composed here (anomalib's default field size)
LARGE_FOLDER = "images/large"
THUMBNAIL_FOLDER = "images/thumbs"
_UNSAFE = re.compile(r"[^A-Za-z0-9._/-]+")


@dataclass
class Pictures:
    """The pictures of one row, as paths relative to the report folder (``None`` if it has none)."""

    thumbnail: str | None
    large: str | None


def picture_key(name: str, taken: set[str]) -> str:
    """A file-name-safe, unique path (without suffix) for a row's pictures; adds it to ``taken``.

    Args:
        name: The row's name (e.g. ``test/crack/000.png``).
        taken: Keys already used (updated).

    Returns:
        The key.

    """
    stem = _UNSAFE.sub("_", Path(name).with_suffix("").as_posix()).strip("/.") or "image"
    stem = "/".join(part.strip(".") or "_" for part in stem.split("/"))
    key, number = stem, 1
    while key in taken:
        number += 1
        key = f"{stem}_{number}"
    taken.add(key)
    return key


def make_pictures(
    rows: Sequence[ReportRow],
    folder: Path,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Pictures]:
    """Write every row's large picture and thumbnail under ``folder`` (the report folder).

    Args:
        rows: The rows.
        folder: The report folder.
        workers: Threads (default: the CPUs, at most 8).
        on_progress: Called with ``(done, total)`` now and then.

    Returns:
        One :class:`Pictures` per row, in order.

    """
    taken: set[str] = set()
    keys = [picture_key(row.name, taken) for row in rows]
    workers = workers or min(8, os.cpu_count() or 1)
    results: list[Pictures] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        made = pool.map(lambda pair: _row_pictures(*pair, folder), zip(rows, keys, strict=True))
        for index, pictures in enumerate(made):
            results.append(pictures)
            if on_progress is not None and (index + 1) % 500 == 0:
                on_progress(index + 1, len(rows))
    return results


def _row_pictures(row: ReportRow, key: str, folder: Path) -> Pictures:
    large = folder / LARGE_FOLDER / f"{key}.jpg"
    thumbnail = folder / THUMBNAIL_FOLDER / f"{key}.jpg"
    sources = [path for path in (row.panel, row.image, row.mask) if path is not None]
    if row.error or not sources:
        return Pictures(None, None)
    newest = max((path.stat().st_mtime for path in sources if path.is_file()), default=None)
    if newest is None:
        return Pictures(None, None)
    if not (_fresh(large, newest) and _fresh(thumbnail, newest)):
        try:
            picture = _picture(row)
        except OSError:  # an image deleted or unreadable since the run: the row stays, without pictures
            return Pictures(None, None)
        large.parent.mkdir(parents=True, exist_ok=True)
        thumbnail.parent.mkdir(parents=True, exist_ok=True)
        picture.save(large, quality=88)
        width = max(1, round(picture.width * THUMBNAIL_HEIGHT / picture.height))
        picture.resize((width, THUMBNAIL_HEIGHT), Image.Resampling.LANCZOS).save(thumbnail, quality=82)
    return Pictures(thumbnail.relative_to(folder).as_posix(), large.relative_to(folder).as_posix())


def _fresh(path: Path, newest: float) -> bool:
    try:
        return path.stat().st_mtime >= newest
    except OSError:
        return False


def _picture(row: ReportRow) -> Image.Image:
    """The row's panel (anomalib's), or one composed of the image and the predicted mask."""
    if row.panel is not None:
        with Image.open(row.panel) as panel:
            return panel.convert("RGB")
    if row.image is None:  # never: rows without any source are skipped
        raise FileNotFoundError(row.name)
    with Image.open(row.image) as source:
        image = _fit(source.convert("RGB"), Image.Resampling.LANCZOS)
    tiles = [_titled(image.copy(), "Image")]
    if row.mask is not None:
        with Image.open(row.mask) as source:
            mask = _fit(source.convert("L"), Image.Resampling.NEAREST, image.size)
        tiles.append(_titled(_outline(image, mask), "Image + Pred Mask"))
        tiles.append(_titled(mask.convert("RGB"), "Pred Mask"))
    panel = Image.new("RGB", (sum(tile.width for tile in tiles), TILE), "white")
    left = 0
    for tile in tiles:
        panel.paste(tile, (left, 0))
        left += tile.width
    return panel


def _fit(image: Image.Image, resample: Image.Resampling, size: tuple[int, int] | None = None) -> Image.Image:
    """The image at the tile height, aspect kept (or at ``size``)."""
    size = size or (max(1, round(image.width * TILE / image.height)), TILE)
    return image.resize(size, resample)


def _outline(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The image with the mask's outline in red (as anomalib draws the predicted mask)."""
    binary = mask.point(lambda value: 255 if value > 127 else 0)
    edges = binary.filter(ImageFilter.FIND_EDGES).filter(ImageFilter.MaxFilter(3))
    outlined = image.copy()
    outlined.paste((255, 0, 0), mask=edges)
    return outlined


def _titled(tile: Image.Image, title: str) -> Image.Image:
    draw = ImageDraw.Draw(tile, "RGBA")
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=18)
    except (TypeError, ImportError):  # Pillow < 10.1 or without FreeType: the small bitmap font
        font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((6, 4), title, font=font)
    draw.rectangle((left - 3, top - 2, right + 3, bottom + 2), fill=(0, 0, 0, 128))
    draw.text((6, 4), title, fill="white", font=font)
    return tile
