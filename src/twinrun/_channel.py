"""Structured reports from a child run to its parent: JSON lines on a file named by an environment variable.

A parent that launches ``twinrun run`` (``runner.launch``) sets ``TWINRUN_REPORT`` to a fresh file;
code in the child calls :func:`report` (an intervention that acted, a draw observed), which appends
one JSON object per line; the parent reads them back with :func:`read` once the child has exited.
Nothing is parsed out of stderr. Without the variable, :func:`report` does nothing.

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "r.jsonl")
>>> os.environ[ENV] = path
>>> report("intervention", name="seed-numpy", what="numpy.random.default_rng() without a seed", site="t.py:3")
>>> [r["name"] for r in read(path)]
['seed-numpy']
>>> del os.environ[ENV]
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["ENV", "read", "report"]

ENV = "TWINRUN_REPORT"
_lock = threading.Lock()
# One report line is a few hundred bytes; a longer one is not ours.
_MAX_LINE = 1 << 16


def report(kind: str, **fields: Any) -> None:
    """Append ``{"kind": kind, **fields}`` to the parent's report file, if there is one."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"kind": kind, **fields}, default=str)
    with _lock, open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")   # one write per line: reports of one process never interleave


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The reports in ``path``, in order; a cut-off or foreign line is skipped, never fatal."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        if not line.strip() or len(line) > _MAX_LINE:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("kind"), str):
            out.append(obj)
    return out
