"""Aggregates the compare page draws from runs: learning curves and performance profiles.

Learning curves are the interquartile mean (IQM) across runs at each logged step, with a 95%
percentile-bootstrap band over runs (resampling runs, seeded, so the page is the same every time);
a step is drawn when at least 2 runs logged it. Performance profiles are the empirical fraction of
runs scoring at least tau (at most tau when lower is better), as in rliable.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..stats import iqm

__all__ = ["CURVE_MAX_POINTS", "CURVE_RESAMPLES", "finite", "finite_values", "learning_curve", "profile"]

CURVE_RESAMPLES = 2000
CURVE_MAX_POINTS = 200   # steps drawn per curve (evenly thinned beyond)


def finite(x: Any) -> bool:
    """A real, finite number (not a NaN, an infinity, a string or None)."""
    return isinstance(x, (int, float)) and math.isfinite(x)


def finite_values(runs: list[dict], metric: str, arm: str | None = None) -> list[float]:
    """Final values of ``metric`` over finished runs (of ``arm``), non-finite ones left out."""
    out = []
    for r in runs:
        if r["status"] != "ok" or (arm is not None and r["arm"] != arm):
            continue
        v = r["metrics"].get(metric)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out.append(float(v))
    return out


def learning_curve(runs: list[dict], metric: str, *, confidence: float = 0.95,
                   n_resamples: int = CURVE_RESAMPLES, seed: int = 0) -> dict | None:
    """``{"steps", "iqm", "low", "high", "n"}`` over the finished runs' series of ``metric``, or None
    when fewer than two runs logged it at more than one step."""
    by_step: dict[int, list[float]] = {}
    for r in runs:
        if r["status"] != "ok":
            continue
        pts = r.get("series", {}).get(metric) or []
        for i, (s, v) in enumerate(pts):
            step = i if s is None else int(s)
            if isinstance(v, (int, float)) and math.isfinite(v):
                by_step.setdefault(step, []).append(float(v))
    steps = sorted(s for s, v in by_step.items() if len(v) >= 2)
    if len(steps) < 2:
        return None
    if len(steps) > CURVE_MAX_POINTS:
        keep = np.unique(np.linspace(0, len(steps) - 1, CURVE_MAX_POINTS).round().astype(int))
        steps = [steps[i] for i in keep]
    rng = np.random.default_rng(seed)
    alpha = (1 - confidence) / 2
    out: dict[str, list[Any]] = {"steps": steps, "iqm": [], "low": [], "high": [], "n": []}
    for s in steps:
        v = np.asarray(by_step[s])
        n = len(v)
        boot = iqm(v[rng.integers(0, n, size=(n_resamples, n))], axis=-1)
        lo, hi = np.quantile(boot, [alpha, 1 - alpha])
        out["iqm"].append(float(iqm(v)))
        out["low"].append(float(lo))
        out["high"].append(float(hi))
        out["n"].append(n)
    return out


def profile(values: list[float], higher_is_better: bool) -> dict:
    """The performance profile of one arm: sorted scores and, at each, the fraction of runs at least
    as good."""
    v = np.sort(np.asarray(values, dtype=float))
    n = len(v)
    if higher_is_better:
        frac = (n - np.searchsorted(v, v, side="left")) / n
    else:
        frac = np.searchsorted(v, v, side="right") / n
    return {"values": [float(x) for x in v], "fraction": [float(f) for f in frac], "n": n}
