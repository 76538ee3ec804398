"""Granularity of the division: sweep the block size, and choose it without anomaly labels.

``settings`` (what is compared), ``synthetic`` (held-out split and synthetic defects),
``evaluation`` (train one setting, score image sets), ``sweep`` (all settings, resumable CSV),
``auto`` (the label-free choice), ``plots`` and ``command`` (``anomalib-divass granularity``).
"""

from .auto import AUTO, GranularityChoice, auto_granularity, choose_setting, oracle_setting
from .settings import GranularitySetting, sweep_settings
from .sweep import run_sweep
from .synthetic import holdout_split, synthetic_defects

__all__ = [
    "AUTO",
    "GranularityChoice",
    "GranularitySetting",
    "auto_granularity",
    "choose_setting",
    "holdout_split",
    "oracle_setting",
    "run_sweep",
    "sweep_settings",
    "synthetic_defects",
]
