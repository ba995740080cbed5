"""twinrun: make neural-network runs repeat exactly; when they don't, say where they first part and why.

>>> import twinrun
>>> seeds = twinrun.seed_everything(0)          # doctest: +SKIP
>>> with twinrun.deterministic(threads=1):      # doctest: +SKIP
...     train()

Public names are loaded on first use, so ``import twinrun`` imports no framework and stays cheap.
"""

from __future__ import annotations

import importlib

from ._errors import (
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
    "record": "twinrun.trace",
    "Comparison": "twinrun.compare",
    "compare": "twinrun.compare",
    "log_metric": "twinrun.metrics",
}

__all__ = sorted([
    "BadResultsError",
    "BadTraceError",
    "FrameworkMissingError",
    "ScriptFailedError",
    "StructuralMismatchError",
    "TwinrunError",
    "UsageError",
    "__version__",
    *_LAZY,
])


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'twinrun' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
