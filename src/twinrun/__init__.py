"""twinrun: make neural-network runs repeat exactly; when they don't, say where they first part and why.

>>> import twinrun
>>> seeds = twinrun.seed_everything(0)          # doctest: +SKIP
>>> with twinrun.deterministic(threads=1):      # doctest: +SKIP
...     train()

Public names are loaded on first use, so ``import twinrun`` imports no framework and stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._errors import (
    BadLockError,
    BadResultsError,
    BadTraceError,
    FrameworkMissingError,
    ScriptFailedError,
    StructuralMismatchError,
    TwinrunError,
    UsageError,
)

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "Seeds": "twinrun.seeding",
    "seed_everything": "twinrun.seeding",
    "DeterminismReport": "twinrun.determinism",
    "deterministic": "twinrun.determinism",
    "Trace": "twinrun.trace",
    "record": "twinrun.recording",
    "step": "twinrun.recording",
    "Comparison": "twinrun.comparison",
    "diff": "twinrun.comparison",
    "replicas": "twinrun.comparison.replicas",
    "compare_sweeps": "twinrun.sweep",
    "log_metric": "twinrun.metrics",
    "probe": "twinrun.probes",
    "ProbeReport": "twinrun.probes",
    "batch_invariant": "twinrun.torch",   # PyTorch only: asking for it imports torch
    "compare": "twinrun._deprecated",   # renamed diff; goes in 0.3
}
# public submodules, loaded on first use: twinrun.numerics.repro_sum(...)
_SUBMODULES = {"numerics"}

__all__ = [
    "BadLockError",
    "BadResultsError",
    "BadTraceError",
    "Comparison",
    "DeterminismReport",
    "FrameworkMissingError",
    "ProbeReport",
    "ScriptFailedError",
    "Seeds",
    "StructuralMismatchError",
    "Trace",
    "TwinrunError",
    "UsageError",
    "__version__",
    "batch_invariant",
    "compare",
    "compare_sweeps",
    "deterministic",
    "diff",
    "log_metric",
    "numerics",
    "probe",
    "record",
    "replicas",
    "seed_everything",
    "step",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'twinrun' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
