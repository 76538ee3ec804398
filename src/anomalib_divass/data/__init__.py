"""Data helpers: the ``MVTec`` alias and an image reader for 16-bit and corrupt files."""

from .image import ImageReadError, install_image_reader, read_image
from .mvtec import DatasetNotFoundError, MVTec

__all__ = ["DatasetNotFoundError", "ImageReadError", "MVTec", "install_image_reader", "read_image"]
