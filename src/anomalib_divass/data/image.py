"""Image reading that handles 16-bit and one-channel files and names corrupt ones.

anomalib 2.7 reads every image with ``PIL.Image.open(path).convert("RGB")``. For a 16-bit
image that conversion clips every value above 255, so a 16-bit photo becomes almost white
and scores are silently wrong; a truncated file fails with a message that does not say which
file. :func:`read_image` returns exactly what anomalib returns for 8-bit images, scales
high-bit-depth images to ``[0, 1]`` by their bit depth, and raises :class:`ImageReadError`
naming the file; :func:`read_mask` names a corrupt mask file the same way. The ``MVTec``
datasets (:mod:`.mvtec`) read with them; anomalib's own readers are left as they are (the
command line replaces them where anomalib reads prediction images, see
:func:`anomalib_divass.compat.read_high_bit_depth_images`).

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from PIL import Image
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "deep.png"
    >>> Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(path)
    >>> round(float(read_image(path, as_tensor=True).max()), 3)
    0.5

"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2.functional import to_dtype, to_image
from torchvision.tv_tensors import Mask

__all__ = ["ImageReadError", "read_image", "read_mask"]

_HIGH_DEPTH_MAX = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0}


class ImageReadError(OSError):
    """An image file could not be decoded."""


def _high_depth_to_rgb(image: Image.Image) -> np.ndarray:
    """Scale a 16/32-bit or float one-channel image to ``[0, 1]`` and repeat it to RGB ``(H, W, 3)``."""
    array = np.asarray(image, dtype=np.float64)
    if image.mode in _HIGH_DEPTH_MAX:
        scale = _HIGH_DEPTH_MAX[image.mode]
    elif image.mode == "F":
        scale = 1.0
    else:  # mode "I": 16-bit PNGs often open this way; use 65535 unless values exceed it
        scale = 65535.0 if array.max(initial=0) <= 65535 else float(np.iinfo(np.int32).max)
    array = np.clip(array / scale, 0.0, 1.0)
    return np.repeat(array[..., None], 3, axis=-1)


def read_image(path: str | Path, as_tensor: bool = False) -> torch.Tensor | np.ndarray:
    """Read an image as RGB in ``[0, 1]``, whatever its bit depth and channel count.

    Args:
        path: Image file.
        as_tensor: Return a float32 ``(3, H, W)`` tensor instead of a float ``(H, W, 3)`` array.

    Returns:
        The image, as anomalib's ``read_image`` returns it for 8-bit files.

    Raises:
        ImageReadError: If the file is missing, truncated or not an image; the message names it.

    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in {"I", "F", *_HIGH_DEPTH_MAX}:
                array = _high_depth_to_rgb(image)
                if as_tensor:
                    return to_image(torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1))
                return array
            rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise _unreadable(path, "image", error) from error
    return to_dtype(to_image(rgb), torch.float32, scale=True) if as_tensor else np.array(rgb) / 255.0


def read_mask(path: str | Path, as_tensor: bool = False) -> torch.Tensor | np.ndarray:
    """Read a ground-truth mask as anomalib's ``read_mask`` does, naming the file if it cannot be read.

    Any non-zero pixel is anomalous, whatever the bit depth (8- or 16-bit, one channel or RGB).

    Args:
        path: Mask file.
        as_tensor: Return a ``uint8`` ``(H, W)`` :class:`~torchvision.tv_tensors.Mask` of 0 and 1 instead of the
            8-bit ``(H, W)`` array.

    Returns:
        The mask.

    Raises:
        ImageReadError: If the file is missing, truncated or not an image; the message names it.

    """
    try:
        with Image.open(path) as image:
            image.load()
            gray = image.convert("L")  # clips 16-bit values to 255: non-zero stays non-zero
    except (OSError, SyntaxError, ValueError) as error:
        raise _unreadable(path, "mask", error) from error
    array = np.array(gray)
    return Mask(torch.from_numpy(array > 0).to(torch.uint8)) if as_tensor else array


def _unreadable(path: str | Path, kind: str, error: BaseException) -> ImageReadError:
    """The error for an unreadable file, naming it and the fix."""
    msg = (
        f"Cannot read {kind} file '{path}': {error}. The file is missing, truncated or not an image: "
        f"replace it or remove it from the data folder."
    )
    return ImageReadError(msg)
