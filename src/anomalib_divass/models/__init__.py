"""The models of anomalib-divass, laid out like anomalib's ``anomalib.models.image``.

Example:
    >>> from anomalib_divass.models import DivideAssemble
    >>> DivideAssemble.__name__
    'DivideAssemble'

"""

from .divide_assemble import DivideAssemble

__all__ = ["DivideAssemble"]
