"""What many runs say about a metric: finite values per arm (NaN/inf excluded and listed), and the
variance-design report (each source's share of the variance)."""

from __future__ import annotations

import math
from typing import Any

from .plan import VARIANCE_ARMS
from .run import SweepRun

__all__ = ["finite_values", "variance_report"]


def finite_values(runs: list[SweepRun], metric: str) -> tuple[list[float], list[dict[str, Any]]]:
    """Values of ``metric`` over finished runs, and the runs excluded because their value is not finite."""
    values, excluded = [], []
    for r in runs:
        if r.status != "ok" or metric not in r.metrics:
            continue
        v = r.metrics[metric]
        if math.isfinite(v):
            values.append(v)
        else:
            excluded.append({"arm": r.arm, "idx": r.idx, "seed": r.seed, "value": str(v)})
    return values, excluded


def variance_report(recs: list[SweepRun], *, n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """metric -> shares of variance by source (``stats.variance_shares``), for a variance-design sweep;
    a metric with fewer than 2 finite runs in an arm gets ``{"error": ...}`` instead."""
    from ..stats import variance_shares

    names = sorted({n for r in recs for n in r.metrics})
    out = {}
    for name in names:
        arms: dict[str, list[float]] = {}
        excluded: list[dict[str, Any]] = []
        for arm in VARIANCE_ARMS:
            vals, exc = finite_values([r for r in recs if r.arm == arm], name)
            arms[arm], excluded = vals, excluded + exc
        short = [a for a, v in arms.items() if len(v) < 2]
        if short:
            out[name] = {"error": f"fewer than 2 finished runs with a finite {name!r} in arm(s) {', '.join(short)}",
                         "excluded": excluded}
            continue
        d = variance_shares(arms, n_resamples=n_resamples, seed=seed).to_dict()
        d["excluded"] = excluded
        out[name] = d
    return out


