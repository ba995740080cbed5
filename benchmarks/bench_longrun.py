"""Long runs: two 10,000-step traces of a small model with the default settings, and their diff.

Goals (issue 16): the trace of a 10,000-step run stays under 1 GB, and ``twinrun diff`` of two such
traces finishes in seconds. The model is a 64-32-10 MLP on scikit-learn's digits (batch 32, SGD);
run B feeds the batch of step 9,000 in reversed order, so the runs part there (in the input), and the
parameters drift apart afterwards (growth over the last 1,000 steps).

Measured: recording time per step (traced and untraced, alternating blocks of steps in one
process), each trace's size, ``twinrun diff A B --json`` in a fresh process (start-up included) and
``twinrun.diff`` in this one (it skips the identical steps before the divergence by their summary
digests), with the time ``Trace.open`` takes (it checks the file).

    python benchmarks/bench_longrun.py            # 10,000 steps, divergence at 9,000
    python benchmarks/bench_longrun.py --quick    # 2,000 steps, divergence at 1,800
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _interleave import ROOT, torch_header


def train(path: Path | None, steps: int, flip_at: int | None) -> tuple[float, float]:
    """Train the MLP for ``steps`` steps, recorded into ``path`` (None: untraced); wall and CPU
    seconds per step (CPU: this process, all threads; on a shared machine wall time is mostly
    waiting for a core)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from torch import nn

    import twinrun

    d = load_digits()
    xs = torch.from_numpy((d.data / 16.0).astype(np.float32))
    ys = torch.from_numpy(d.target.astype(np.int64))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    order = torch.randperm(len(xs), generator=gen)
    batch = 32
    n_batches = len(xs) // batch

    def loop() -> None:
        for s in range(steps):
            k = s % n_batches
            idx = order[k * batch:(k + 1) * batch]
            x, y = xs[idx], ys[idx]
            if s == flip_at:
                x, y = x.flip(0), y.flip(0)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

    t0, c0 = time.perf_counter(), time.process_time()
    if path is None:
        loop()
    else:
        with twinrun.record(path):
            loop()
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--keep", metavar="FOLDER", default=None, help="write the traces here and keep them")
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)
    steps = a.steps or (2_000 if a.quick else 10_000)
    flip_at = steps * 9 // 10
    folder = Path(a.keep) if a.keep else Path(tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{torch_header()}; 64-32-10 MLP on digits, batch 32; {steps:,} steps, B parts at step {flip_at:,}")
    ta, tb = folder / "a.trace", folder / "b.trace"
    untraced = train(None, min(steps, 1000), None)
    per_a = train(ta, steps, None)
    per_b = train(tb, steps, flip_at)
    untraced2 = train(None, min(steps, 1000), None)
    base = [(u + v) / 2 for u, v in zip(untraced, untraced2)]
    for label, path, per in (("A", ta, per_a), ("B", tb, per_b)):
        size = path.stat().st_size
        print(f"  trace {label}: {size / 1e6:8.1f} MB ({size / steps / 1e3:.1f} kB/step), recorded at "
              f"{per[0] * 1e3:.2f} ms/step wall, {per[1] * 1e3:.2f} CPU (untraced {base[0] * 1e3:.2f} wall, "
              f"{base[1] * 1e3:.2f} CPU; ratio {per[0] / base[0]:.2f} wall, {per[1] / base[1]:.2f} CPU)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "twinrun", "diff", str(ta), str(tb), "--json"],
                       check=False, capture_output=True, text=True, env=env, timeout=3600)
    cli_s = time.perf_counter() - t0
    doc = json.loads(r.stdout) if r.stdout.strip() else {}
    first = doc.get("first_divergence") or {}
    print(f"  twinrun diff --json (fresh process): {cli_s:.2f} s, exit {r.returncode}; first divergence at step "
          f"{first.get('step')} ({first.get('phase')} {first.get('name')}), {len(doc.get('growth') or [])} growth rows")
    if r.returncode not in (0, 1):
        print(r.stderr.strip()[-2000:])

    from twinrun.comparison import diff
    from twinrun.trace import Trace

    t0 = time.perf_counter()
    Trace.open(ta).close()
    Trace.open(tb).close()
    open_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    c = diff(ta, tb)
    cmp_s, cmp_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"  diff() in this process: {cmp_s:.2f} s wall, {cmp_cpu:.2f} s CPU (of which opening both traces "
          f"~{open_s:.2f} s); {c.steps_compared:,} steps, {c.events_compared:,} events compared")
    print(f"goals: trace < 1 GB ({max(ta.stat().st_size, tb.stat().st_size) / 1e9:.3f} GB); "
          f"diff in seconds ({cli_s:.1f} s)")


if __name__ == "__main__":
    main()
