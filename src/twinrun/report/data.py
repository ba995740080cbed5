"""What the pages need beyond the ``--json`` documents, read from the artefacts themselves.

This module is the only place in ``twinrun.report`` that opens traces and sweep results files,
through their public readers: ``twinrun.trace.Trace.open(path)`` (``steps()``, ``events(step)``,
``value(event)``, ``header``, ``status``) and ``twinrun.sweep.Results.open(path)`` (``runs(series=True)``,
``meta``, ``metric_names()``). When those readers move, only the two imports below change.

Everything returned is plain data (dicts, lists, numbers, strings) with a stable order.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import BadResultsError, BadTraceError, UsageError

if TYPE_CHECKING:  # imported lazily at run time: the sweep package pulls in the process machinery
    from ..sweep import Results
    from ..trace import Trace

__all__ = [
    "DIFFER",
    "IDENTICAL",
    "MAP_MAX_COLUMNS",
    "NOT_COMPARED",
    "NOT_RECORDED",
    "SOME_DIFFER",
    "diff_data",
    "divergence_map",
    "kind_of",
    "sweep_runs",
    "trace_info",
    "ulp_histogram",
]

# Cell states of the divergence map.
IDENTICAL, SOME_DIFFER, DIFFER, NOT_RECORDED, NOT_COMPARED = 0, 1, 2, 3, 4
# More steps than this are shown in bins of consecutive steps (a bin differs when any step in it does).
MAP_MAX_COLUMNS = 160
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _open_trace(path: str | os.PathLike) -> Trace:
    from ..trace import Trace  # the public reader

    return Trace.open(path)


def _open_results(path: str | os.PathLike) -> Results:
    from ..sweep import Results  # the public reader

    return Results.open(path)


# --- what is this file? ---------------------------------------------------------------------------
def kind_of(path: str | os.PathLike) -> str:
    """``"trace"``, ``"results"`` or ``"json"``; a one-line ``UsageError`` for anything else."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p}: no such file; give two traces, one or two sweep results files, or a --json output")
    if p.is_dir():
        raise UsageError(f"{p} is a folder; give a file (a trace, a results file or a --json output)")
    with open(p, "rb") as f:
        head = f.read(16)
    if head == _SQLITE_MAGIC:
        why = []
        try:
            with _open_trace(p):
                return "trace"
        except BadTraceError as e:
            why.append(str(e))
        try:
            r = _open_results(p)
        except BadResultsError as e:
            why.append(str(e))
        else:
            r.close()
            return "results"
        raise UsageError(f"{p} is an SQLite file but neither a twinrun trace nor a sweep results file "
                         f"({why[0]})")
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    raise UsageError(f"{p} is not a twinrun trace, results file or JSON document; make one with "
                     "`twinrun run -o FILE`, `twinrun sweep -o FILE` or a command's --json")


# --- traces ---------------------------------------------------------------------------------------
def diff_data(a: str | os.PathLike, b: str | os.PathLike, *, phases: list[str] | None = None,
              first: tuple[int, int] | None = None) -> dict:
    """Everything the diff page reads from two traces, each opened once: ``{"traces", "map", "ulp"}``
    (``ulp`` only when ``first`` names the first divergence as ``(step, index)``)."""
    with _open_trace(a) as ta, _open_trace(b) as tb:
        out = {"traces": [_info(ta, a), _info(tb, b)], "map": _map(ta, tb, phases, MAP_MAX_COLUMNS)}
        if first is not None:
            out["ulp"] = _ulp(ta, tb, *first)
    return out


def trace_info(path: str | os.PathLike) -> dict:
    """What a reader wants to know of one trace: file, script, arguments, status, steps."""
    with _open_trace(path) as t:
        return _info(t, path)


def _info(t: Any, path: str | os.PathLike) -> dict:
    h = t.header if isinstance(t.header, dict) else {}
    return {"path": str(path), "file": Path(path).name, "status": t.status, "steps": len(t.steps()),
            "script": h.get("script"), "script_args": h.get("script_args"),
            "twinrun": h.get("twinrun"), "command": h.get("twinrun_command")}


def divergence_map(a: str | os.PathLike, b: str | os.PathLike, *, phases: list[str] | None = None,
                   max_columns: int = MAP_MAX_COLUMNS) -> dict:
    """Steps x events, each cell identical or differing, with the first divergence located.

    Rows are the events (phase, name) in the order they first occur; columns the steps both traces
    recorded (in bins of consecutive steps when there are more than ``max_columns``). Each row is
    run-length encoded: ``[[first_column, columns, state], ...]``. After a structural mismatch the
    remaining cells are ``NOT_COMPARED``, as in the comparison itself.
    """
    with _open_trace(a) as ta, _open_trace(b) as tb:
        return _map(ta, tb, phases, max_columns)


def _map(ta: Any, tb: Any, phases: list[str] | None, max_columns: int) -> dict:
    keep = set(phases) if phases else None
    common = sorted(set(ta.steps()) & set(tb.steps()))
    rows: OrderedDict[tuple[str, str], int] = OrderedDict()
    cells: list[dict[int, int]] = []   # per row: step position -> state
    first: tuple[int, int] | None = None
    first_event: dict | None = None
    broken: dict | None = None
    for pos, step in enumerate(common):
        ea = [e for e in ta.events(step) if keep is None or e.phase in keep]
        eb = [e for e in tb.events(step) if keep is None or e.phase in keep]
        for i in range(max(len(ea), len(eb))):
            x = ea[i] if i < len(ea) else None
            y = eb[i] if i < len(eb) else None
            if x is None or y is None or not x.same_kind(y):
                e = x or y
                broken = {"step": step, "index": i, "position": pos,
                          "phase": None if e is None else e.phase, "name": None if e is None else e.name}
                break
            key = (x.phase, x.name)
            if key not in rows:
                rows[key] = len(rows)
                cells.append({})
            r = rows[key]
            differ = x.digest != y.digest
            cells[r][pos] = DIFFER if differ else IDENTICAL
            if differ and first is None:
                first = (r, pos)
                first_event = {"step": step, "index": x.index, "phase": x.phase, "name": x.name}
        if broken is not None:
            break
    n = len(common)
    width = max(1, math.ceil(n / max_columns)) if n else 1
    ncols = math.ceil(n / width) if n else 0
    stop = broken["position"] if broken is not None else None
    encoded = []
    for r in range(len(rows)):
        states = []
        for c in range(ncols):
            lo, hi = c * width, min(n, (c + 1) * width)
            seen = [cells[r].get(p, NOT_RECORDED) for p in range(lo, hi)]
            if stop is not None and lo > stop:
                states.append(NOT_COMPARED)
                continue
            rec = [s for s in seen if s != NOT_RECORDED]
            if not rec:
                states.append(NOT_COMPARED if stop is not None and hi - 1 > stop else NOT_RECORDED)
            elif all(s == IDENTICAL for s in rec):
                states.append(IDENTICAL)
            elif all(s == DIFFER for s in rec):
                states.append(DIFFER)
            else:
                states.append(SOME_DIFFER)
        encoded.append(_runs(states))
    columns = [[common[c * width], common[min(n, (c + 1) * width) - 1]] for c in range(ncols)]
    return {
        "rows": [{"phase": p, "name": nm} for (p, nm) in rows],
        "columns": columns,
        "bin": width,
        "cells": encoded,
        "first": None if first is None else {"row": first[0], "column": first[1] // width, **(first_event or {})},
        "structural": broken,
        "steps": n,
    }


def _runs(states: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for c, s in enumerate(states):
        if out and out[-1][2] == s:
            out[-1][1] += 1
        else:
            out.append([c, 1, s])
    return out


_FLOAT_NAMES = ("float", "bfloat", "complex")


def ulp_histogram(a: str | os.PathLike, b: str | os.PathLike, step: int, index: int) -> dict:
    """ULP distances between the two traces' values of event ``index`` of ``step``, in bins of
    powers of two: ``[1], [2, 3], [4, 7], ...``; identical values and NaNs are counted apart.

    ``{"available": False, "why": ...}`` when the values were not kept or are not floating point.
    """
    with _open_trace(a) as ta, _open_trace(b) as tb:
        return _ulp(ta, tb, step, index)


def _ulp(ta: Any, tb: Any, step: int, index: int) -> dict:
    ea = next((e for e in ta.events(step) if e.index == index), None)
    eb = next((e for e in tb.events(step) if e.index == index), None)
    if ea is None or eb is None:
        return {"available": False, "why": f"event {index} of step {step} is not in both traces"}
    base = {"step": step, "index": index, "phase": ea.phase, "name": ea.name, "dtype": ea.dtype,
            "size": ea.size}
    if not ea.dtype.startswith(_FLOAT_NAMES):
        return {**base, "available": False,
                "why": f"the values are {ea.dtype}: ULP distances apply to floating-point values"}
    va = ta.value(ea) if ea.has_value else None
    vb = tb.value(eb) if eb.has_value else None
    if va is None or vb is None:
        return {**base, "available": False,
                "why": "the values of this tensor were not kept in the traces (larger than the value threshold, "
                       "or past the value budget); only its digest and statistics were recorded"}
    d, nan = _ulp_distances(np.asarray(va), np.asarray(vb))
    nonzero = d[d > 0]
    edges = np.array([1 << j for j in range(64)], dtype=np.uint64)
    k = np.searchsorted(edges, nonzero, side="right")  # bit length: bin of [2^(k-1), 2^k - 1]
    counts = np.bincount(k.astype(np.int64), minlength=1) if nonzero.size else np.zeros(1, dtype=np.int64)
    bins = [{"lo": 1 << (j - 1), "hi": (1 << j) - 1, "count": int(counts[j])} for j in range(1, len(counts))]
    return {**base, "available": True, "compared": int(d.size + nan), "identical": int((d == 0).sum()),
            "nan": int(nan), "differing": int(nonzero.size), "max_ulp": int(d.max()) if d.size else 0,
            "median_ulp": int(np.median(nonzero)) if nonzero.size else 0, "bins": bins}


def _ulp_distances(va: np.ndarray, vb: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-element ULP distance (uint64) and the count of pairs with a NaN (left out)."""
    a, b = np.ascontiguousarray(va).reshape(-1), np.ascontiguousarray(vb).reshape(-1)
    nan = np.zeros(a.shape, dtype=bool)
    if a.dtype.kind == "c":  # complex: each component on its own
        a, b = a.view(np.dtype(f"<f{a.dtype.itemsize // 2}")), b.view(np.dtype(f"<f{b.dtype.itemsize // 2}"))
        nan = np.zeros(a.shape, dtype=bool)
    if a.dtype.kind == "f":
        nan = np.isnan(a) | np.isnan(b)
    width = a.dtype.itemsize * 8
    ua = a.view(np.dtype(f"<u{a.dtype.itemsize}") if width > 8 else np.uint8).astype(np.uint64)
    ub = b.view(np.dtype(f"<u{b.dtype.itemsize}") if width > 8 else np.uint8).astype(np.uint64)
    top = np.uint64(width - 1)
    mask = np.uint64((1 << (width - 1)) - 1)
    sa, sb = ua >> top, ub >> top
    ma, mb = ua & mask, ub & mask
    # Same sign: the magnitudes' distance; other signs: through zero (+0 and -0 are 0 apart).
    same = np.where(ma >= mb, ma - mb, mb - ma)
    d = np.where(sa == sb, same, ma + mb)
    return d[~nan], int(nan.sum())


# --- sweep results --------------------------------------------------------------------------------
def sweep_runs(path: str | os.PathLike) -> dict:
    """A results file's runs (with per-step series), its metric names and its design."""
    r = _open_results(path)
    try:
        meta = r.meta
        runs = []
        for rec in r.runs(series=True):
            err = (rec.error or "").strip()
            runs.append({
                "arm": rec.arm, "idx": rec.idx, "seed": rec.seed, "status": rec.status,
                "returncode": rec.returncode, "duration": _finite(rec.duration), "host": rec.host,
                "metrics": {k: _value(v) for k, v in sorted(rec.metrics.items())},
                "error": err.splitlines()[-1][-300:] if err else None,
                "series": {k: [[s, _value(v)] for s, v in pts] for k, pts in sorted(rec.series.items())},
            })
        return {"path": str(path), "file": Path(path).name, "metrics": list(r.metric_names()),
                "script": meta.get("script"), "args": meta.get("args"), "design": meta.get("design"),
                "vary": meta.get("vary"), "base_seed": meta.get("base_seed"), "state": meta.get("state"),
                "runs": runs}
    finally:
        r.close()


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _value(v: Any) -> float | str:
    v = float(v)
    return v if math.isfinite(v) else str(v)
