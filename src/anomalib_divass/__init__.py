"""anomalib-divass: the Divide-and-Assemble anomaly detector (DAAD, ICCV 2021) for anomalib.

Re-exports only: importing the package changes nothing in anomalib. ``DivideAssemble`` is an
``AnomalibModule`` and ``MVTec`` an ``MVTecAD`` datamodule alias, so once imported anomalib's
command line resolves ``--model DivideAssemble`` and ``--data MVTec`` (the ``.pth`` hook imports
the package when, and only when, anomalib's command line starts).

Example:
    >>> from anomalib_divass import DivideAssemble
    >>> DivideAssemble(pre_processor=False).model.granularity
    (32, 16, 8, 4, 2)

"""

from .data import MVTec
from .models import DivideAssemble

__all__ = ["DivideAssemble", "MVTec"]
__version__ = "0.1.0"
