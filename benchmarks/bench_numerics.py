"""repro_sum against np.sum and math.fsum, side by side in one run (medians, interleaved).

10 M float64 and 10 M float32 values: np.sum (pairwise, order-dependent), math.fsum (exact,
correctly rounded float64), the xsum superaccumulator alone, and twinrun's repro_sum; plus the
ensemble average repro_mean(predictions, axis=0) against np.mean for 7 models x 10,000 rows x 10
classes. Ratios are to np.sum (np.mean for the ensemble).

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

    cases: dict[str, dict[str, Callable[[], Any]]] = {
        "float64_10M": {"np.sum": lambda: np.sum(x64), "math.fsum": lambda: math.fsum(x64),
                        "xsum": xsum_large, "repro_sum": lambda: repro_sum(x64)},
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
