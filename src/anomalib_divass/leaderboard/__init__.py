"""The leaderboard: DivideAssemble against PaDiM, PatchCore and the others, measured the same way.

``anomalib-divass leaderboard`` trains and tests a list of models on a list of MVTec-layout
categories with anomalib's ``Engine``, datamodule and ``Evaluator``, stores every finished pair
at once (an interrupted run resumes; a training cut off mid-way, from its last epoch), and writes
a CSV, a Markdown table and PNG charts.

It does not use ``anomalib benchmark``, which fails plugin models in three ways (anomalib 2.7):
it builds models with ``anomalib.models.get_model``, which looks short names up in
``anomalib.models`` and refuses dotted paths outside anomalib (``ALLOWED_MODULES``); it exits 0
even when a job fails; and mixing models whose ``init_args`` keys differ loses every result
(``KeyError`` when the results are gathered). Here each pair is its own ``Engine`` run, a failure is
recorded for that pair (the rest finish) and makes the exit code 1.

- ``models``: the contestants and their shared settings.
- ``measure``: the evaluator, timing callbacks and model size.
- ``runner``: the pairs, their stored results and the resume of finished pairs.
- ``resume``: a training cut off mid-way continues from its last finished epoch.
- ``report`` and ``plots``: the files.
- ``command``: the command line.

Example:
    >>> from anomalib_divass.leaderboard import MODELS
    >>> "PatchCore" in MODELS
    True

"""

from .models import MODELS, LeaderboardSettings, resolve_models

__all__ = ["MODELS", "LeaderboardSettings", "main", "resolve_models"]


def main(argv: list[str] | None = None) -> int:
    """Run ``anomalib-divass leaderboard`` with ``argv``; return the exit code."""
    from .command import main as command_main  # noqa: PLC0415

    return command_main(argv or [])
