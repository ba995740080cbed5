"""Plain data out: the one JSON conversion and the one number formatting every output uses.

>>> to_jsonable({"x": float("nan"), "n": (1, 2)})
{'x': 'nan', 'n': [1, 2]}
>>> fmt_count(12345), fmt_float(2.8e-09), fmt_float(0.125, 3)
('12,345', '2.8e-09', '0.125')
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["dumps", "finite_or_none", "fmt_count", "fmt_float", "to_jsonable"]

# Deeper structures are cut (as their repr): a header or fingerprint that deep is not one of ours.
_MAX_DEPTH = 50


def to_jsonable(obj: Any, _depth: int = 0) -> Any:
    """A copy of ``obj`` made of JSON types only.

    Non-finite floats become strings ("nan", "inf"), so a document stays valid JSON and a NaN is
    reported, never lost; objects with ``to_dict()`` are converted through it, NumPy scalars through
    ``item()``, tuples and sets become lists, paths strings, anything else its ``repr``.
    """
    if _depth > _MAX_DEPTH:
        return repr(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v, _depth + 1) for v in obj]
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict(), _depth + 1)
    item = getattr(obj, "item", None)
    if callable(item):  # NumPy scalars
        return to_jsonable(item(), _depth + 1)
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def dumps(obj: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """``json.dumps`` of ``to_jsonable(obj)``."""
    return json.dumps(to_jsonable(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)


def finite_or_none(x: Any) -> float | None:
    """``x`` as a float, or None when it is missing or not finite (JSON has no NaN)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return float(x)


def fmt_count(x: Any) -> str:
    """Whole numbers with thousands separators; anything else as ``str``."""
    return f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else str(x)


def fmt_float(x: float | None, digits: int = 2) -> str:
    """A float in ``digits`` significant digits: plain between 1e-3 and 1e4, else scientific; "?" when unknown."""
    if x is None:
        return "?"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.{digits}g}"
    return f"{x:.{max(digits - 1, 0)}e}"
