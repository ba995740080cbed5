"""Recording results from any script: ``log_metric(name, value, step=None)``.

Under ``twinrun sweep`` the value is appended to the file named by ``$TWINRUN_METRICS`` (one JSON
object a line); under ``twinrun run`` it also becomes a ``metric`` event of the trace. Run on its
own, the script pays one debug log line and nothing else.

>>> from twinrun import log_metric
>>> log_metric("accuracy", 0.93)
>>> log_metric("loss", 0.41, step=100)
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from . import _active
from ._errors import UsageError

__all__ = ["METRICS_ENV", "log_metric", "read_metrics"]

METRICS_ENV = "TWINRUN_METRICS"
_log = logging.getLogger("twinrun.metrics")


def _as_float(name: str, value: Any) -> float:
    try:
        return float(value)  # Python/NumPy numbers and 0-d tensors of every framework
    except (TypeError, ValueError):
        pass
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return float(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    raise UsageError(f"log_metric({name!r}, ...): the value must be one number, got {type(value).__name__}; "
                     "pass a Python float or a one-element tensor")


def _encode(v: float) -> float | str:
    # JSON has no NaN/inf; keep them as strings so they are reported, never lost.
    return v if math.isfinite(v) else str(v)


def log_metric(name: str, value: Any, step: int | None = None) -> None:
    """Record one value of metric ``name`` (optionally at training ``step``).

    Appends a JSON line to ``$TWINRUN_METRICS`` when set (``twinrun sweep`` sets it), records a
    ``metric`` event on the active trace recorder when one is running, else logs at debug level.
    NaN and infinities are kept (sweeps report and exclude them explicitly).
    """
    if not isinstance(name, str) or not name:
        raise UsageError(f"log_metric: the name must be a non-empty string, got {name!r}")
    v = _as_float(name, value)
    if step is not None:
        step = int(step)
    path = os.environ.get(METRICS_ENV)
    recorder = _active.recorder()
    if path:
        line = json.dumps({"name": name, "value": _encode(v), "step": step, "time": time.time()})
        # One write of one line in append mode: lines from one process never interleave.
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    if recorder is not None:
        import numpy as np

        recorder.event("metric", name, np.asarray(v, dtype=np.float64))
    if not path and recorder is None:
        _log.debug("metric %s = %r (step %s); not recorded: not running under twinrun", name, v, step)


def read_metrics(path: str | os.PathLike) -> dict[str, list[tuple[int | None, float]]]:
    """Read a ``$TWINRUN_METRICS`` file: ``{name: [(step, value), ...]}`` in the order logged.

    A truncated last line (the script was killed mid-write) is skipped; other bad lines raise.
    """
    series: dict[str, list[tuple[int | None, float]]] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return series
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            name, value, step = rec["name"], float(rec["value"]), rec.get("step")
        except (ValueError, KeyError, TypeError):
            if i == len(lines) - 1:  # last line without newline: cut short by a kill
                continue
            raise UsageError(f"{path}: line {i + 1} is not a metric record written by log_metric") from None
        series.setdefault(str(name), []).append((step, value))
    return series
