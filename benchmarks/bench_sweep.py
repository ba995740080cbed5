"""Sweep and compare performance, measured side by side in one run.

    python benchmarks/bench_sweep.py            # all three
    python benchmarks/bench_sweep.py --quick    # fewer runs

1. Overhead per run of the sweep machinery beyond the script's own time (goal < 0.3 s): the same
   trivial script run N times directly (fresh `python` each time) vs `sweep --workers 1`.
2. Speed-up of --workers 2 over --workers 1 on a CPU-bound script (goal >= 1.7 on 2 cores), and of
   dask-local (2 workers) over --workers 1.
3. `compare` on two files of 1,000 runs x 10 metrics with 10,000 bootstrap resamples (goal: a few s).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])

from twinrun.sweep import Results, SweepRun, compare_sweeps, script_identity, sweep  # noqa: E402

TRIVIAL = "import twinrun\ntwinrun.log_metric('x', 1.0)\n"
CPU = "import twinrun\ns = 0\nfor i in range(12_000_000):\n    s += i % 7\ntwinrun.log_metric('x', s)\n"


def overhead(tmp: Path, n: int) -> None:
    script = tmp / "trivial.py"
    script.write_text(TRIVIAL)
    t = time.perf_counter()
    for _ in range(n):
        subprocess.run([sys.executable, str(script)], check=True, env={**os.environ, "TWINRUN_SEED": "0"})
    direct = time.perf_counter() - t
    t = time.perf_counter()
    sweep(script, seeds=n, output=tmp / "o.db", workers=1)
    swept = time.perf_counter() - t
    print(f"overhead: {n} runs direct {direct:.2f}s, swept {swept:.2f}s -> "
          f"{(swept - direct) / n:.3f} s per run beyond the script (goal < 0.3)")


def speedup(tmp: Path, n: int) -> None:
    script = tmp / "cpu.py"
    script.write_text(CPU)
    times = {}
    for label, kw in (("workers 1", dict(workers=1)), ("workers 2", dict(workers=2)),
                      ("dask-local 2", dict(workers=2, executor="dask-local"))):
        t = time.perf_counter()
        r = sweep(script, seeds=n, output=tmp / f"{label.replace(' ', '')}.db", **kw)
        times[label] = time.perf_counter() - t
        assert r.ok == n, r.failures
    base = times["workers 1"]
    shown = ", ".join(f"{k} {v:.2f}s" for k, v in times.items())
    print(f"speed-up on {n} CPU-bound runs ({os.cpu_count()} cores): " + shown
          + f" -> workers 2: {base / times['workers 2']:.2f}x, dask-local 2: {base / times['dask-local 2']:.2f}x "
          "(goal >= 1.7; dask-local includes starting the cluster)")


def fake_results(path: Path, script: Path, runs: int, metrics: int, shift: float, seed: int) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    ident = script_identity(script)
    with Results.create(path, ident, {"design": "single", "vary": "all", "base_seed": 0}, dict) as res:
        for i in range(runs):
            res.add(SweepRun("all", i, i, {"TWINRUN_SEED": str(i)}, "ok", 0, None, 1.0, "bench",
                             series={f"m{k}": [(None, float(rng.normal(0.9 + shift * (k % 2), 0.01)))]
                                     for k in range(metrics)}))


def compare_speed(tmp: Path, runs: int, resamples: int) -> None:
    script = tmp / "trivial.py"
    script.write_text(TRIVIAL)
    a, b = tmp / "A.db", tmp / "B.db"
    fake_results(a, script, runs, 10, 0.002, 1)
    fake_results(b, script, runs, 10, 0.0, 2)
    t = time.perf_counter()
    res = compare_sweeps(a, b, n_resamples=resamples)
    dt = time.perf_counter() - t
    t = time.perf_counter()
    compare_sweeps(a, n_resamples=resamples)
    dt1 = time.perf_counter() - t
    print(f"compare: 2 files x {runs} runs x 10 metrics, {resamples} resamples: {dt:.2f}s "
          f"(summary of one file: {dt1:.2f}s); {sum(m['comparison']['significant'] for m in res.metrics.values())} "
          "of 10 metrics significant (5 shifted)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["overhead", "speedup", "compare"])
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if opts.only in (None, "overhead"):
            overhead(tmp, 5 if opts.quick else 20)
        if opts.only in (None, "speedup"):
            speedup(tmp, 4 if opts.quick else 8)
        if opts.only in (None, "compare"):
            compare_speed(tmp, 1000, 10_000)


if __name__ == "__main__":
    main()
