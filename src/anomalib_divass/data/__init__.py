"""Data helpers: the ``MVTec`` alias, its dataset, and an image reader for 16-bit, one-channel and corrupt files."""

from .image import ImageReadError, read_image, read_mask
from .mvtec import DatasetNotFoundError, MVTec, MVTecDataset

__all__ = ["DatasetNotFoundError", "ImageReadError", "MVTec", "MVTecDataset", "read_image", "read_mask"]
