"""The README's main job: an embedded demo dataset (a metal washer with defects) and its training run.

* :mod:`.data`: the demo category generator, MVTec AD layout, with pixel masks.
* :mod:`.command`: ``anomalib-divass demo``.
"""
