"""anomalib-divass: the Divide-and-Assemble anomaly detector (DAAD, ICCV 2021) for anomalib.

Importing the package registers ``DivideAssemble`` (and the ``MVTec`` data alias) with
anomalib's command line, and installs an image reader that handles 16-bit images and names
corrupt files.

Example:
    >>> from anomalib_divass import DivideAssemble
    >>> DivideAssemble(pre_processor=False).model.granularity
    (32, 16, 8, 4, 2)

"""

from .cli import install_seed_everything
from .data import MVTec, install_image_reader
from .lightning_model import DivideAssemble

install_image_reader()
install_seed_everything()  # when anomalib's command line is running

__all__ = ["DivideAssemble", "MVTec"]
__version__ = "0.1.0"
