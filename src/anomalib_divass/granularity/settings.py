"""The settings a granularity sweep compares: block sizes per scale, and the vanilla autoencoder.

A setting is one uniform block side ``k`` in feature cells used at every scale (capped at the
map side, so the bottleneck soon holds one block), one block for the whole map at every scale,
the model's default (blocks of constant image area), or the vanilla autoencoder (memories off).
``k = 1`` is MemAE's pixel-wise memory; ``"whole"`` is one memory vector per map.

Example:
    >>> [s.name for s in sweep_settings([1, 8, "whole"], image_size=(256, 256), num_scales=5)]
    ['k=1', 'k=8', 'whole map', 'default', 'vanilla AE']
    >>> uniform_granularity(32, (256, 256), 5)
    (32, 32, 32, 16, 8)

"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..models.divide_assemble.lightning_model import DEFAULT_GRANULARITY

__all__ = [
    "DEFAULT_GRANULARITY",
    "WHOLE_MAP",
    "GranularitySetting",
    "feature_map_sides",
    "parse_block_size",
    "sweep_settings",
    "uniform_granularity",
]

WHOLE_MAP = "whole"


@dataclass(frozen=True)
class GranularitySetting:
    """One point of the sweep.

    Attributes:
        name: Short label used in tables and plots (``"k=4"``, ``"whole map"``, ``"default"``, ``"vanilla AE"``).
        granularity: Block side per scale, finest first.
        use_memory: ``False`` for the vanilla autoencoder (trained as the ``AE+Skip`` variant).
        block_size: The uniform block side (``"whole"`` for one block per map), or ``None`` for
            settings off the uniform axis (default, vanilla).

    """

    name: str
    granularity: tuple[int, ...]
    use_memory: bool = True
    block_size: int | str | None = None


def feature_map_sides(image_size: Sequence[int], num_scales: int) -> list[int]:
    """The shorter side of every scale's feature map, finest first.

    Args:
        image_size: ``(height, width)`` after pre-processing.
        num_scales: Number of stride-2 stages.

    Returns:
        ``min(H, W) / 2**(i+1)`` for every scale ``i``.

    Example:
        >>> feature_map_sides((256, 256), 5)
        [128, 64, 32, 16, 8]

    """
    side = min(int(s) for s in image_size)
    return [side // 2 ** (scale + 1) for scale in range(num_scales)]


def uniform_granularity(block_size: int | str, image_size: Sequence[int], num_scales: int) -> tuple[int, ...]:
    """Block side ``k`` at every scale, capped at the map side (``"whole"``: the map side itself).

    Args:
        block_size: ``k`` in feature cells, or ``"whole"``.
        image_size: ``(height, width)`` after pre-processing.
        num_scales: Number of stride-2 stages.

    Returns:
        One block side per scale, finest first.

    """
    sides = feature_map_sides(image_size, num_scales)
    if block_size == WHOLE_MAP:
        return tuple(sides)
    return tuple(min(int(block_size), side) for side in sides)


def parse_block_size(text: str | int) -> int | str:
    """Read one block size of the command line: a power of two, or ``whole``.

    Raises:
        ValueError: For anything else, naming what is accepted.

    Example:
        >>> parse_block_size("4"), parse_block_size("whole")
        (4, 'whole')

    """
    if str(text).strip().lower() in {WHOLE_MAP, "whole map", "whole_map"}:
        return WHOLE_MAP
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or value & (value - 1):
        msg = f"Block size {text!r} is neither a power of two (1, 2, 4, 8, ...) nor 'whole' (one block per map)."
        raise ValueError(msg)
    return value


def sweep_settings(
    block_sizes: Sequence[int | str],
    image_size: Sequence[int] = (256, 256),
    num_scales: int = 5,
    default: Sequence[int] | None = DEFAULT_GRANULARITY,
    vanilla: bool = True,
) -> list[GranularitySetting]:
    """The settings of a sweep: the uniform block sizes, then the default and the vanilla autoencoder.

    Block sizes that give the same granularity as an earlier one (capped at small maps) are dropped.

    Args:
        block_sizes: Uniform block sides (powers of two) and/or ``"whole"``.
        image_size: ``(height, width)`` after pre-processing.
        num_scales: Number of stride-2 stages of the network.
        default: The model's default granularity, added as its own setting; ``None`` leaves it out.
        vanilla: Add the vanilla autoencoder.

    Returns:
        The settings, uniform ones first (finest first).

    """
    settings: list[GranularitySetting] = []
    seen: set[tuple[int, ...]] = set()
    for block_size in block_sizes:
        size = parse_block_size(block_size)
        granularity = uniform_granularity(size, image_size, num_scales)
        if granularity in seen:
            continue
        seen.add(granularity)
        settings.append(GranularitySetting("whole map" if size == WHOLE_MAP else f"k={size}", granularity, True, size))
    if default is not None:
        settings.append(GranularitySetting("default", tuple(int(k) for k in default)))
    if vanilla:
        # The memories are off; the granularity only has to fit the input (it is what the checkpoint records).
        plain = tuple(default) if default is not None else uniform_granularity(1, image_size, num_scales)
        settings.append(GranularitySetting("vanilla AE", tuple(int(k) for k in plain), False))
    return settings
