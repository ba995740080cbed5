"""torch.compile under twinrun: graph breaks, names and time (issue 10).

Runs a compiled MLP on digits for a few SGD steps, untraced and under ``twinrun.record``, and prints
Dynamo's graph and graph-break counts for each (``torch._dynamo.utils.counters``), the recorded
parameter names, and the wall time of each setting. Reproduce:

    PYTHONPATH=src python benchmarks/bench_compile.py [--backend aot_eager|inductor] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn


def _train(backend: str, steps: int) -> None:
    torch.manual_seed(0)
    d = load_digits()
    x = torch.from_numpy((d.data / 16.0).astype(np.float32))
    y = torch.from_numpy(d.target.astype(np.int64))
    model = torch.compile(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), backend=backend)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x[i * 64:(i + 1) * 64]), y[i * 64:(i + 1) * 64]).backward()
        opt.step()


def measure(traced: bool, backend: str, steps: int) -> dict[str, Any]:
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    t0 = time.perf_counter()
    names: list[str] = []
    if traced:
        import twinrun
        from twinrun.trace import Trace

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "c.trace"
            with twinrun.record(path):
                _train(backend, steps)
            t = Trace.open(path)
            names = sorted({e.name for e in t.events() if e.phase in ("grad", "param")})
    else:
        _train(backend, steps)
    return {"traced": traced, "seconds": round(time.perf_counter() - t0, 2),
            "graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "break_reasons": sorted({r.splitlines()[0][:100] for r in counters["graph_break"]})[:5], "names": names}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="aot_eager")
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args()
    for traced in (False, True, False, True):
        print(json.dumps(measure(traced, a.backend, a.steps)))


if __name__ == "__main__":
    main()
