"""Granularity of the division: sweep the block size, and choose it without anomaly labels.

``settings`` (what is compared), ``synthetic`` (held-out split and synthetic defects),
``evaluation`` (train one setting in a plain loop, score image sets), ``sweep`` (all settings,
resumable CSV), ``auto`` (the label-free choice), ``callback`` (:class:`ChooseGranularity`, the
choice before training for ``DivideAssemble(granularity="auto")``, which the command lines add by
themselves), ``plots`` and ``command`` (``anomalib-divass granularity`` and ``granularity choose``).

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_divass import DivideAssemble, MVTec
    >>> engine = Engine(max_epochs=50, callbacks=[ChooseGranularity(epochs=10)])
    >>> engine.fit(DivideAssemble(granularity="auto"), datamodule=MVTec(root="datasets/MVTecAD"))  # doctest: +SKIP

"""

from .auto import AUTO, GranularityChoice, auto_granularity, choose_setting, oracle_setting
from .callback import ChooseGranularity, install_cli_choice
from .settings import GranularitySetting, sweep_settings
from .sweep import run_sweep
from .synthetic import holdout_split, synthetic_defects

__all__ = [
    "AUTO",
    "ChooseGranularity",
    "GranularityChoice",
    "GranularitySetting",
    "auto_granularity",
    "choose_setting",
    "holdout_split",
    "install_cli_choice",
    "oracle_setting",
    "run_sweep",
    "sweep_settings",
    "synthetic_defects",
]
