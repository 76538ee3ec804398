"""Synthetic, photo-like inspection images of a metal washer in the MVTec AD folder layout.

The demo and the tests need a small data set that exists offline, is the same on every
machine and looks like a real inspection photo rather than a square on noise. This module
renders a top view of a brushed-metal washer (a ring) on a dark textured background with a
soft drop shadow, a bevel on both edges, a lighting gradient and highlight, a small position
jitter, a random brushing direction, sensor noise and exposure variation. Defective images
add one of four defects with its exact pixel mask:

* ``scratch``: a thin bright or dark curved line (a random Bezier curve, 1-3 px wide);
* ``crack``: a dark jagged random-walk line, sometimes branching, usually from an edge;
* ``stain``: an irregular semi-transparent rust or oil blob (thresholded smooth noise);
* ``notch``: a bite missing from the outer or inner edge; the background shows through.

Every defect lies on the product and covers between :data:`MIN_DEFECT_AREA` and
:data:`MAX_DEFECT_AREA` of the image. Images are drawn from seeds derived from ``seed``,
the split, the defect type and the index, so a given image never depends on how many
others are generated. Only numpy and PIL are used; 150 images of 256 x 256 take about a
second on one core.

Layout written by :func:`make_demo_category`::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<defect>/000.png
    <root>/<category>/ground_truth/<defect>/000_mask.png   (0/255, same size as the image)

Example:
    >>> import tempfile
    >>> folder = make_demo_category(tempfile.mkdtemp(), num_train=4, num_test_good=2, num_test_per_defect=1)
    >>> sorted(p.name for p in (folder / "test").iterdir())
    ['crack', 'good', 'notch', 'scratch', 'stain']
    >>> image, mask = render_sample(np.random.default_rng(0), 128, "stain")
    >>> image.shape, image.dtype, mask.shape, mask.dtype
    ((128, 128, 3), dtype('float32'), (128, 128), dtype('bool'))
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["DEFECT_TYPES", "MAX_DEFECT_AREA", "MIN_DEFECT_AREA", "make_demo_category", "render_sample"]

DEFECT_TYPES: tuple[str, ...] = ("scratch", "crack", "stain", "notch")
"""Defect types, in the order of their seed streams."""

MIN_DEFECT_AREA = 0.003
"""Smallest defect mask, as a fraction of the image area."""

MAX_DEFECT_AREA = 0.03
"""Largest defect mask, as a fraction of the image area."""

# Bump when the rendering changes, so folders written by an older version are regenerated.
_FORMAT_VERSION = 1
_MARKER = ".demo_data.json"
_MIN_IMAGE_SIZE = 32
_MAX_TRIES = 200

# Ring geometry as fractions of the image side, and the centre jitter.
_OUTER_RADIUS = (0.372, 0.388)
_INNER_RADIUS = (0.162, 0.178)
_JITTER = 0.016

_SUPERSAMPLE = 2  # defect strokes are drawn at this scale and box-filtered down (anti-aliasing)


@dataclass
class _Scene:
    """The defect-free scene before compositing; every array is ``(H, W)`` or ``(H, W, 3)``."""

    size: int
    background: np.ndarray  # (H, W, 3) background with drop shadow
    metal: np.ndarray  # (H, W, 3) product surface (defined everywhere, shown where ``coverage`` > 0)
    coverage: np.ndarray  # (H, W) anti-aliased product coverage in [0, 1]
    shade: np.ndarray  # (H, W) lighting of the product surface (for tinting stains)
    centre: tuple[float, float]  # ring centre (x, y), px
    outer: float  # outer radius, px
    inner: float  # inner radius, px


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)``, each ``(H, W)`` float32, read-only."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    y.setflags(write=False)
    x.setflags(write=False)
    return y, x


def _resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resize of a float ``(h, w)`` array to ``(height, width)``."""
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise ``(size, size)`` with about ``cells`` features per side, zero mean, unit std."""
    padded = size + size * 3 // cells
    noise = _resize(rng.standard_normal((cells + 3, cells + 3), dtype=np.float32), padded, padded)
    offset = size * 3 // (2 * cells)  # crop the border, where bicubic interpolation is one-sided
    noise = noise[offset : offset + size, offset : offset + size]
    return (noise - noise.mean()) / (noise.std() + 1e-6)


def _brushed_streaks(rng: np.random.Generator, size: int, angle: float) -> np.ndarray:
    """Brushed-metal streaks ``(size, size)`` along ``angle`` (degrees), zero mean, unit std."""
    side = int(np.ceil(size * 1.45)) + 2  # covers the image at any rotation
    fine = _resize(rng.standard_normal((side, 7), dtype=np.float32), side, side)  # 1 px across, ~side/6 long
    wide = _resize(rng.standard_normal((side // 4, 5), dtype=np.float32), side, side)  # ~4 px bands, longer
    streaks = Image.fromarray(fine + 0.8 * wide, mode="F").rotate(angle, resample=Image.Resampling.BILINEAR)
    start = (side - size) // 2
    streaks = np.asarray(streaks)[start : start + size, start : start + size]
    return (streaks - streaks.mean()) / (streaks.std() + 1e-6)


def _ring_coverage(radius: np.ndarray, outer: float, inner: float, softness: float = 0.5) -> np.ndarray:
    """Coverage in ``[0, 1]`` of the ring ``inner <= r <= outer`` with a linear edge ``2 * softness`` px wide."""
    outside = np.clip((outer - radius) / (2 * softness) + 0.5, 0.0, 1.0)
    inside = np.clip((radius - inner) / (2 * softness) + 0.5, 0.0, 1.0)
    return outside * inside


def _render_scene(rng: np.random.Generator, size: int) -> _Scene:
    """Draw the random parameters and textures of a defect-free image."""
    yy, xx = _grid(size)
    cx = size / 2 + rng.uniform(-_JITTER, _JITTER) * size
    cy = size / 2 + rng.uniform(-_JITTER, _JITTER) * size
    outer = rng.uniform(*_OUTER_RADIUS) * size
    inner = rng.uniform(*_INNER_RADIUS) * size
    dx, dy = xx - cx, yy - cy
    radius = np.hypot(dx, dy)
    scale = size / 256

    # Lighting: a main direction, a linear gradient over the field and a slight vignette.
    light = rng.uniform(0, 2 * np.pi)
    lx, ly = float(np.cos(light)), float(np.sin(light))
    gradient = 1 + rng.uniform(0.06, 0.16) * ((xx - size / 2) * lx + (yy - size / 2) * ly) / (size / 2)
    vignette = 1 - 0.12 * ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (size / 2) ** 2

    # Background: dark matte plate with blotches, grain and the product's soft drop shadow.
    tint = np.array([0.088, 0.092, 0.1], dtype=np.float32) * rng.uniform(0.8, 1.2)
    tint = (tint * (1 + rng.uniform(-0.06, 0.06, 3))).astype(np.float32)
    texture = 1 + 0.18 * _smooth_noise(rng, size, 5) + 0.1 * _smooth_noise(rng, size, 24)
    texture = texture + 0.07 * rng.standard_normal((size, size), dtype=np.float32)
    shift = rng.uniform(2.0, 4.0) * scale
    shadow_radius = np.hypot(dx + shift * lx, dy + shift * ly)
    shadow = _ring_coverage(shadow_radius, outer + 1.5 * scale, inner - 1.5 * scale, softness=5 * scale)
    background = (texture * gradient * vignette * (1 - 0.55 * shadow))[..., None] * tint

    # Product: brushed steel, a broad highlight stretched across the brushing, bevelled edges.
    angle = rng.uniform(0, 180)
    streaks = _brushed_streaks(rng, size, angle)
    across = np.deg2rad(angle) + np.pi / 2  # PIL rotates counter-clockwise; image y points down
    ax, ay = float(np.cos(across)), float(-np.sin(across))
    hx = cx + rng.uniform(-0.25, 0.25) * size
    hy = cy + rng.uniform(-0.25, 0.25) * size
    along_h = (xx - hx) * ax + (yy - hy) * ay
    across_h = (xx - hx) * ay - (yy - hy) * ax
    highlight = rng.uniform(0.12, 0.3) * np.exp(
        -0.5 * ((along_h / (0.35 * size)) ** 2 + (across_h / (0.12 * size)) ** 2)
    )
    bevel_width = 2.5 * scale
    towards_light = (dx * lx + dy * ly) / np.maximum(radius, 1e-3)
    outer_bevel = np.clip(1 - (outer - radius) / bevel_width, 0, 1)
    inner_bevel = np.clip(1 - (radius - inner) / bevel_width, 0, 1)
    bevel = 0.35 * (outer_bevel - inner_bevel) * towards_light - 0.1 * (outer_bevel + inner_bevel)
    shade = (gradient * vignette * (1 + highlight) + bevel) * rng.uniform(0.92, 1.08)
    steel = (np.array([0.6, 0.615, 0.645]) * (1 + rng.uniform(-0.025, 0.025, 3))).astype(np.float32)
    surface = shade * (1 + 0.055 * streaks + 0.02 * _smooth_noise(rng, size, 10))
    metal = surface[..., None] * steel
    coverage = _ring_coverage(radius, outer, inner)
    return _Scene(
        size=size,
        background=background.astype(np.float32),
        metal=metal.astype(np.float32),
        coverage=coverage.astype(np.float32),
        shade=shade.astype(np.float32),
        centre=(cx, cy),
        outer=outer,
        inner=inner,
    )


def _stroke_alpha(size: int, strokes: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """Anti-aliased coverage ``(H, W)`` in ``[0, 1]`` of polylines ``(points (N, 2) in px (x, y), width px)``."""
    canvas = Image.new("L", (size * _SUPERSAMPLE, size * _SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(canvas)
    for points, width in strokes:
        xy = [(float(x), float(y)) for x, y in (points + 0.5) * _SUPERSAMPLE - 0.5]
        draw.line(xy, fill=255, width=max(1, round(width * _SUPERSAMPLE)), joint="curve")
    return np.asarray(canvas.reduce(_SUPERSAMPLE), dtype=np.float32) / 255


def _point_on_band(rng: np.random.Generator, scene: _Scene, margin: float) -> tuple[float, float, float]:
    """A random point on the ring at least ``margin`` (fraction of the band width) from its edges.

    Returns:
        ``(x, y, phi)``: the point in px and its angle around the centre in radians.
    """
    phi = rng.uniform(0, 2 * np.pi)
    band = scene.outer - scene.inner
    r = rng.uniform(scene.inner + margin * band, scene.outer - margin * band)
    return scene.centre[0] + r * np.cos(phi), scene.centre[1] + r * np.sin(phi), phi


def _scratch(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A thin bright or dark scratch: a cubic Bezier curve wandering across the ring, 1-3 px wide."""
    size = scene.size
    scale = max(1.0, size / 256)
    width = rng.uniform(1.0, 3.0) * scale
    band = scene.outer - scene.inner
    middle = (scene.outer + scene.inner) / 2
    # Long enough for a visible mask (about 0.4% to 1.2% of the image), at most ~80 degrees of arc.
    length = rng.uniform(0.004, 0.012) * size**2 / (width + 0.8 * scale)
    span = min(length / middle, 1.4) * rng.choice([-1.0, 1.0])
    angles = rng.uniform(0, 2 * np.pi) + span * np.array([0, 1 / 3, 2 / 3, 1]) + rng.normal(0, 0.06, 4)
    radii = rng.uniform(scene.inner + 0.12 * band, scene.outer - 0.12 * band, 4)
    control = np.array(scene.centre) + radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    t = np.linspace(0, 1, 48)[:, None]
    weights = np.concatenate([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3], axis=1)
    curve = weights @ control
    alpha = _stroke_alpha(size, [(curve, width)]) * scene.coverage
    mask = (alpha >= 0.25) & (scene.coverage >= 0.5)
    metal = scene.metal
    if rng.random() < 0.6:  # bright: the groove's walls catch the light
        metal = np.minimum(metal + (alpha * rng.uniform(0.22, 0.38))[..., None], 1.0)
    else:
        metal = metal * (1 - alpha * rng.uniform(0.4, 0.6))[..., None]
    return metal, scene.coverage, mask


def _random_walk(rng: np.random.Generator, start: np.ndarray, heading: float, steps: int, step: float) -> np.ndarray:
    """Jagged walk ``(steps + 1, 2)`` from ``start``: persistent heading plus random turns."""
    turns = rng.normal(0, 0.55, steps)
    headings = np.empty(steps)
    current = heading
    for i in range(steps):
        current += turns[i] + 0.25 * (heading - current)  # pulled back towards the main direction
        headings[i] = current
    moves = step * rng.uniform(0.6, 1.4, (steps, 1)) * np.stack([np.cos(headings), np.sin(headings)], axis=1)
    return start + np.concatenate([np.zeros((1, 2)), np.cumsum(moves, axis=0)])


def _crack(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A dark jagged crack, usually starting at an edge, sometimes branching."""
    size = scene.size
    scale = max(1.0, size / 256)
    phi = rng.uniform(0, 2 * np.pi)
    radial = np.array([np.cos(phi), np.sin(phi)])
    centre = np.array(scene.centre)
    where = rng.random()
    if where < 0.45:  # from the inner edge, outwards
        start, heading = centre + (scene.inner - 1) * radial, phi + rng.normal(0, 0.35)
    elif where < 0.85:  # from the outer edge, inwards
        start, heading = centre + (scene.outer + 1) * radial, phi + np.pi + rng.normal(0, 0.35)
    else:  # inside the band, any direction
        x0, y0, phi = _point_on_band(rng, scene, 0.2)
        start, heading = np.array([x0, y0]), rng.uniform(0, 2 * np.pi)
    step = 2.0 * size / 256
    steps = int(rng.uniform(0.8, 1.3) * (scene.outer - scene.inner) / step) + 4
    width = rng.uniform(1.8, 2.8) * scale
    trunk = _random_walk(rng, start, heading, steps, step)
    strokes = [(trunk, width)]
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3])):
        fork = int(rng.integers(steps // 4, steps - 2))
        side = rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.0)
        branch = _random_walk(rng, trunk[fork], heading + side, max(3, int(steps * rng.uniform(0.2, 0.5))), step)
        strokes.append((branch, width * 0.7))
    alpha = _stroke_alpha(size, strokes) * scene.coverage
    mask = (alpha >= 0.25) & (scene.coverage >= 0.5)
    metal = scene.metal * (1 - alpha * rng.uniform(0.6, 0.8))[..., None]
    return metal, scene.coverage, mask


def _stain(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An irregular semi-transparent rust or oil stain: thresholded smooth noise around a centre."""
    size = scene.size
    yy, xx = _grid(size)
    x0, y0, _ = _point_on_band(rng, scene, 0.3)
    radius = rng.uniform(0.035, 0.075) * size
    stretch = rng.uniform(1.0, 1.8)
    theta = rng.uniform(0, np.pi)
    u = ((xx - x0) * np.cos(theta) + (yy - y0) * np.sin(theta)) / (radius * stretch)
    v = (-(xx - x0) * np.sin(theta) + (yy - y0) * np.cos(theta)) * stretch / radius
    field = 1 - (u**2 + v**2) + 0.45 * _smooth_noise(rng, size, 14) + 0.2 * _smooth_noise(rng, size, 40)
    field = field * (np.hypot(u, v) < 2.2)  # keep one blob, not stray islands of the noise
    mask = (field > 0) & (scene.coverage >= 0.5)
    grain = 1 + 0.15 * _smooth_noise(rng, size, 50)
    strength = np.clip(0.45 + field / 0.6, 0, 1) * grain  # denser inside, visible edge
    if rng.random() < 0.6:  # rust: orange-brown, fairly opaque
        colour, opacity = np.array([0.5, 0.24, 0.09]) * rng.uniform(0.8, 1.15), rng.uniform(0.55, 0.8)
    else:  # oil: dark yellow-brown film
        colour, opacity = np.array([0.2, 0.17, 0.1]) * rng.uniform(0.8, 1.3), rng.uniform(0.45, 0.7)
    alpha = np.where(mask, np.clip(opacity * strength, 0, 0.95), 0.0)[..., None]
    stain = scene.shade[..., None] * colour * (1 + 0.03 * rng.standard_normal((size, size, 1), dtype=np.float32))
    metal = scene.metal * (1 - alpha) + stain * alpha
    return metal.astype(np.float32), scene.coverage, mask


def _notch(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bite missing from the outer or inner edge: an irregular polygon removed from the ring."""
    size = scene.size
    phi = rng.uniform(0, 2 * np.pi)
    bite = rng.uniform(0.045, 0.085) * size
    on_outer = rng.random() < 0.65
    edge = scene.outer if on_outer else scene.inner
    depth = rng.uniform(-0.1, 0.35) * bite  # centre slightly outside the product: less than a half disc
    r = edge + depth if on_outer else edge - depth
    cx, cy = scene.centre[0] + r * np.cos(phi), scene.centre[1] + r * np.sin(phi)
    corners = int(rng.integers(9, 15))
    angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
    radii = bite * rng.uniform(0.7, 1.2, corners)
    stretch = rng.uniform(0.8, 1.6)  # elongated along the edge, like a chipped rim
    tangent = phi + np.pi / 2
    px = radii * np.cos(angles) * stretch
    py = radii * np.sin(angles)
    polygon = np.stack(
        [cx + px * np.cos(tangent) - py * np.sin(tangent), cy + px * np.sin(tangent) + py * np.cos(tangent)], axis=1
    )
    canvas = Image.new("L", (size * _SUPERSAMPLE, size * _SUPERSAMPLE), 0)
    xy = [(float(x), float(y)) for x, y in (polygon + 0.5) * _SUPERSAMPLE - 0.5]
    ImageDraw.Draw(canvas).polygon(xy, fill=255)
    removed = np.asarray(canvas.reduce(_SUPERSAMPLE), dtype=np.float32) / 255
    mask = (scene.coverage >= 0.5) & (removed >= 0.5)
    return scene.metal, scene.coverage * (1 - removed), mask


_DEFECTS: dict[str, Callable[[np.random.Generator, _Scene], tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
    "scratch": _scratch,
    "crack": _crack,
    "stain": _stain,
    "notch": _notch,
}


def render_sample(rng: np.random.Generator, image_size: int, defect: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Render one washer image, normal or with one defect, and its defect mask.

    The random draws for the defect-free scene (including the sensor noise) come first, so
    two generators in the same state give the same scene with and without a defect: the
    images then differ only on the defect.

    Args:
        rng: Random generator; it is advanced.
        image_size: Side ``S`` of the square image in pixels (at least 32).
        defect: One of :data:`DEFECT_TYPES`, or ``None`` for a normal image.

    Returns:
        ``(image, mask)``: the RGB image, float32 ``(S, S, 3)`` in ``[0, 1]``, and the defect
        mask, bool ``(S, S)`` (all ``False`` for a normal image). A defect mask lies on the
        product and covers between :data:`MIN_DEFECT_AREA` and :data:`MAX_DEFECT_AREA` of the image.

    Raises:
        ValueError: If ``defect`` is not a known type or ``image_size`` is too small.
    """
    if defect is not None and defect not in _DEFECTS:
        msg = f"Unknown defect type '{defect}'; expected one of {', '.join(DEFECT_TYPES)} or None."
        raise ValueError(msg)
    if image_size < _MIN_IMAGE_SIZE:
        msg = f"image_size must be at least {_MIN_IMAGE_SIZE}, got {image_size}."
        raise ValueError(msg)
    scene = _render_scene(rng, image_size)
    noise_level = rng.uniform(0.007, 0.014)
    noise = rng.standard_normal((image_size, image_size, 1), dtype=np.float32) * np.float32(noise_level)
    noise = noise + rng.standard_normal((image_size, image_size, 3), dtype=np.float32) * np.float32(0.5 * noise_level)
    exposure = rng.uniform(0.94, 1.06)
    metal, coverage, mask = scene.metal, scene.coverage, np.zeros((image_size, image_size), dtype=bool)
    if defect is not None:
        low, high = MIN_DEFECT_AREA * image_size**2, MAX_DEFECT_AREA * image_size**2
        for _ in range(_MAX_TRIES):
            metal, coverage, mask = _DEFECTS[defect](rng, scene)
            if low <= mask.sum() <= high:
                break
        else:  # pragma: no cover - the parameter ranges make this practically impossible
            msg = f"Could not place a '{defect}' defect of the allowed size in {_MAX_TRIES} tries."
            raise RuntimeError(msg)
    image = scene.background * (1 - coverage[..., None]) + metal * coverage[..., None]
    image = np.clip(image * exposure + noise, 0.0, 1.0)
    return image.astype(np.float32), mask


def _file_names(count: int, suffix: str = "") -> list[str]:
    """``000.png``, ``001.png``, ... (more digits past 1000)."""
    digits = max(3, len(str(count - 1)))
    return [f"{i:0{digits}d}{suffix}.png" for i in range(count)]


def _expected_files(
    num_train: int, num_test_good: int, num_test_per_defect: int, defect_types: Sequence[str]
) -> dict[Path, list[str]]:
    """Image (and mask) file names of each folder, relative to the category folder."""
    files = {Path("train/good"): _file_names(num_train), Path("test/good"): _file_names(num_test_good)}
    for defect in defect_types:
        files[Path("test") / defect] = _file_names(num_test_per_defect)
        files[Path("ground_truth") / defect] = _file_names(num_test_per_defect, "_mask")
    return files


def _is_complete(folder: Path, files: dict[Path, list[str]]) -> bool:
    """Whether every expected PNG exists and no image folder holds extra PNGs."""
    for sub in ("train", "test", "ground_truth"):
        present = {p.name for p in (folder / sub).iterdir() if p.is_dir()} if (folder / sub).is_dir() else set()
        if present != {rel.name for rel in files if rel.parts[0] == sub}:
            return False
    for rel, names in files.items():
        directory = folder / rel
        if not directory.is_dir() or sorted(p.name for p in directory.glob("*.png")) != names:
            return False
    return True


def _to_pil(image: np.ndarray, grayscale: bool, bit_depth: int) -> Image.Image:
    """Float ``(H, W, 3)`` image in ``[0, 1]`` as an RGB, ``L`` or ``I;16`` PIL image."""
    if grayscale or bit_depth == 16:
        gray = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if bit_depth == 16:
            return Image.fromarray(np.round(gray * 65535).astype(np.uint16))
        return Image.fromarray(np.round(gray * 255).astype(np.uint8))
    return Image.fromarray(np.round(image * 255).astype(np.uint8))


def _write(
    folder: Path,
    files: dict[Path, list[str]],
    image_size: int,
    seed: int,
    grayscale: bool,
    bit_depth: int,
) -> None:
    """Render and write every image and mask of ``files`` into ``folder``."""
    for rel in files:
        (folder / rel).mkdir(parents=True, exist_ok=True)
    streams = {"train/good": 0, "test/good": 1} | {f"test/{d}": 2 + i for i, d in enumerate(DEFECT_TYPES)}
    for rel, names in files.items():
        if rel.parts[0] == "ground_truth":
            continue
        defect = None if rel.name == "good" else rel.name
        for index, name in enumerate(names):
            rng = np.random.default_rng([seed, streams[rel.as_posix()], index])
            image, mask = render_sample(rng, image_size, defect)
            _to_pil(image, grayscale, bit_depth).save(folder / rel / name, compress_level=1)
            if defect is not None:
                mask_name = name.removesuffix(".png") + "_mask.png"
                Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "ground_truth" / defect / mask_name)


def make_demo_category(
    root: str | Path,
    category: str = "washer",
    num_train: int = 120,
    num_test_good: int = 20,
    num_test_per_defect: int = 8,
    image_size: int = 256,
    seed: int = 0,
    defect_types: Sequence[str] = DEFECT_TYPES,
    grayscale: bool = False,
    bit_depth: int = 8,
) -> Path:
    """Generate (or reuse) a synthetic MVTec AD category of washer images.

    A complete existing folder is left untouched, so calling this again is cheap. A folder
    written by this function is regenerated if files are missing or were added, or if it
    was written with other settings (seed, size, colour, bit depth, defect types, counts).
    The images are written into a temporary sibling folder that is renamed into place only
    when complete, so an interrupted run never leaves a folder that looks complete.

    Args:
        root: Dataset root; the category folder is created inside it.
        category: Category folder name.
        num_train: Normal training images (at least 1).
        num_test_good: Normal test images.
        num_test_per_defect: Test images (and masks) per defect type.
        image_size: Side of the square images in pixels (at least 32).
        seed: Non-negative seed; the same seed and settings give byte-identical files.
        defect_types: Defect types to include, a subset of :data:`DEFECT_TYPES`.
        grayscale: Write one-channel 8-bit PNGs (PIL mode ``"L"``) instead of RGB.
        bit_depth: 8, or 16 for one-channel 16-bit PNGs (PIL mode ``"I;16"``, full 16-bit
            range); 16 implies ``grayscale``.

    Returns:
        The category folder ``<root>/<category>``.

    Raises:
        ValueError: If an argument is out of range or a defect type is unknown.
        FileExistsError: If ``<root>/<category>`` exists, is not empty, was not written by
            this function and does not hold the expected files (it is never deleted).
    """
    defect_types = tuple(dict.fromkeys(defect_types))
    unknown = [d for d in defect_types if d not in DEFECT_TYPES]
    if unknown:
        msg = f"Unknown defect type(s) {', '.join(unknown)}; expected a subset of {', '.join(DEFECT_TYPES)}."
        raise ValueError(msg)
    if bit_depth not in {8, 16}:
        msg = f"bit_depth must be 8 or 16, got {bit_depth}."
        raise ValueError(msg)
    if num_train < 1 or num_test_good < 0 or num_test_per_defect < 0:
        msg = "num_train must be at least 1 and num_test_good, num_test_per_defect non-negative."
        raise ValueError(msg)
    if image_size < _MIN_IMAGE_SIZE:
        msg = f"image_size must be at least {_MIN_IMAGE_SIZE}, got {image_size}."
        raise ValueError(msg)
    if seed < 0:
        msg = f"seed must be non-negative, got {seed}."
        raise ValueError(msg)
    if category in {"", ".", ".."} or Path(category).name != category:
        msg = f"category must be a plain folder name, got '{category}'."
        raise ValueError(msg)
    grayscale = grayscale or bit_depth == 16
    if num_test_per_defect == 0:
        defect_types = ()

    root = Path(root)
    folder = root / category
    files = _expected_files(num_train, num_test_good, num_test_per_defect, defect_types)
    settings = {
        "format_version": _FORMAT_VERSION,
        "seed": seed,
        "image_size": image_size,
        "grayscale": grayscale,
        "bit_depth": bit_depth,
        "num_train": num_train,
        "num_test_good": num_test_good,
        "num_test_per_defect": num_test_per_defect,
        "defect_types": list(defect_types),
    }
    if _reusable(folder, files, settings):
        return folder

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{category}.partial-", dir=root))
    try:
        _write(staging, files, image_size, seed, grayscale, bit_depth)
        (staging / _MARKER).write_text(json.dumps(settings, indent=2) + "\n")
        _swap_in(staging, folder, files, settings)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _read_marker(folder: Path) -> dict | None:
    """Settings recorded in ``folder`` by :func:`make_demo_category`, or ``None``."""
    try:
        return json.loads((folder / _MARKER).read_text())
    except (OSError, ValueError):
        return None


def _reusable(folder: Path, files: dict[Path, list[str]], settings: dict) -> bool:
    """Whether ``folder`` can be returned as is; raise if it is foreign data that must not be replaced."""
    if not folder.exists():
        return False
    marker = _read_marker(folder)
    if marker is None:
        if not folder.is_dir():
            msg = f"'{folder}' exists and is not a folder; remove it or choose another root or category."
            raise FileExistsError(msg)
        if _is_complete(folder, files):
            return True  # a folder with exactly the expected files: keep it
        if any(p.is_file() for p in folder.rglob("*")):
            msg = (
                f"'{folder}' exists, was not written by make_demo_category and does not hold the expected "
                f"demo files; it is left alone. Remove it or choose another root or category."
            )
            raise FileExistsError(msg)
        return False  # empty folder tree (for example left by a failed download): replace it
    return marker == settings and _is_complete(folder, files)


def _swap_in(staging: Path, folder: Path, files: dict[Path, list[str]], settings: dict) -> None:
    """Rename the finished ``staging`` folder to ``folder``, replacing an outdated one."""
    old = None
    if folder.exists():
        old = folder.with_name(f"{staging.name}.old")
        folder.rename(old)
    try:
        staging.rename(folder)
    except OSError:
        # Another process put a folder in place meanwhile; accept it if it is what we would write.
        if not _reusable(folder, files, settings):
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
