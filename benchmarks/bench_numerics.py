"""repro_sum against np.sum and math.fsum, side by side in one run (medians, interleaved).

10 M float64 and 10 M float32 values: np.sum (pairwise, order-dependent), math.fsum (exact,
correctly rounded float64), the xsum superaccumulator alone, and twinrun's repro_sum; plus the
ensemble average repro_mean(predictions, axis=0) against np.mean for 7 models x 10,000 rows x 10
classes. Ratios are to np.sum (np.mean for the ensemble).

Two ideas tried for the goal of at most 2x np.sum on 10 M float64 (issue 14), measured in the same
rounds: ``xsum_2threads`` (the array split in two halves, one xsum accumulator per thread, merged
exactly: xsum's binding holds the GIL, so the threads take turns) and ``numpy_exact`` (a vectorised
exact sum in NumPy that releases the GIL, split over 2 threads: each value cut into two integer
pieces of at most 27 bits per binary exponent, summed per exponent by ``np.bincount``, exact below
2**26 terms, then the few thousand per-exponent sums added by xsum).

    python benchmarks/bench_numerics.py [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import numpy as np
    import xsum

    from twinrun.numerics import repro_mean, repro_sum

    rng = np.random.default_rng(0)
    x64 = rng.standard_normal(10_000_000)
    x32 = x64.astype(np.float32)
    preds = rng.dirichlet(np.ones(10), size=(7, 10_000)).astype(np.float32)

    def xsum_large() -> float:
        acc = xsum.xsum_large_accumulator()
        xsum.xsum_add(acc, x64)
        return float(xsum.xsum_round(acc))

    pool = ThreadPoolExecutor(2)

    def half_accumulator(part: Any) -> Any:
        acc = xsum.xsum_large_accumulator()
        xsum.xsum_add(acc, part)
        return acc

    def xsum_2threads() -> float:
        h = len(x64) // 2
        a, b = pool.map(half_accumulator, [x64[:h], x64[h:]])
        xsum.xsum_add(a, b)   # merging two large accumulators is exact
        return float(xsum.xsum_round(a))

    def binned(part: Any) -> tuple[Any, Any]:
        m, e = np.frexp(part)               # part = m * 2**e, |m| in [0.5, 1)
        t = m * 67108864.0                  # * 2**26: |t| in [2**25, 2**26)
        hi = np.trunc(t)                    # an integer below 2**26
        lo = (t - hi) * 134217728.0         # * 2**27: an integer below 2**27
        idx = e + 1100
        return np.bincount(idx, weights=hi, minlength=2300), np.bincount(idx, weights=lo, minlength=2300)

    def numpy_exact() -> float:
        chunks = [x64[i:i + (1 << 16)] for i in range(0, len(x64), 1 << 16)]
        acc = xsum.xsum_small_accumulator()
        for sh, sl in pool.map(binned, chunks):
            for sums, shift in ((sh, 26), (sl, 53)):
                nz = np.flatnonzero(sums)
                xsum.xsum_add(acc, np.ldexp(sums[nz], nz - 1100 - shift))
        return float(xsum.xsum_round(acc))

    exact = xsum_large()
    assert xsum_2threads() == exact == numpy_exact() == float(repro_sum(x64))

    cases: dict[str, dict[str, Callable[[], Any]]] = {
        "float64_10M": {"np.sum": lambda: np.sum(x64), "math.fsum": lambda: math.fsum(x64),
                        "xsum": xsum_large, "repro_sum": lambda: repro_sum(x64),
                        "xsum_2threads": xsum_2threads, "numpy_exact": numpy_exact},
        "float32_10M": {"np.sum": lambda: np.sum(x32), "repro_sum": lambda: repro_sum(x32)},
        "ensemble_7x10000x10": {"np.sum": lambda: np.mean(preds, axis=0),
                                "repro_sum": lambda: repro_mean(preds, axis=0)},
    }
    times: dict[str, dict[str, list[float]]] = {c: {f: [] for f in fs} for c, fs in cases.items()}
    for r in range(args.rounds):
        for case, fns in cases.items():
            for name, fn in fns.items():
                if name == "math.fsum" and r >= 2:
                    continue   # ~1 s a call; two rounds say enough
                t = time.perf_counter()
                fn()
                times[case][name].append(time.perf_counter() - t)
    result: dict[str, Any] = {}
    for case, per in times.items():
        base = statistics.median(per["np.sum"])
        result[case] = {"np.sum_ms": round(base * 1e3, 2),
                        **{f"{n}_x": round(statistics.median(v) / base, 2) for n, v in per.items() if n != "np.sum"}}
    if args.json:
        print(json.dumps(result))
        return
    print(f"repro_sum cost, medians of {args.rounds} interleaved rounds (ratio to np.sum / np.mean)")
    for case, r in result.items():
        ratios = "  ".join(f"{k[:-2]} {v:.2f}x" for k, v in r.items() if k.endswith("_x"))
        print(f"{case:22s} baseline {r['np.sum_ms']:8.2f} ms   {ratios}")


if __name__ == "__main__":
    main()
