"""The configs shipped inside the package (they travel with the wheel).

``divide_assemble.yaml`` is DivideAssemble on MVTec AD sized for a 2-core CPU; ``anomalib-divass config``
prints it, ``anomalib-divass config --path`` prints where it is, and the leaderboard reads it by default.

Example:
    >>> config_path().name
    'divide_assemble.yaml'
    >>> config_path().is_file()
    True

"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["SHIPPED_CONFIG", "config_path"]

SHIPPED_CONFIG = "divide_assemble.yaml"


def config_path(name: str = SHIPPED_CONFIG) -> Path:
    """Path of a config shipped inside the package (works from a wheel as from the repository).

    Args:
        name: File name in ``anomalib_divass/configs``.

    Returns:
        The file's path.

    """
    return Path(str(resources.files(__name__) / name))
