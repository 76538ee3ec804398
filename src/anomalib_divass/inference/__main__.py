"""``python -m anomalib_divass.inference``: the folder command (see :mod:`.command`)."""

import sys

from .command import main

sys.exit(main())
