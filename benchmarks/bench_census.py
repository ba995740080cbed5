"""The cost of the deterministic alternatives of the ops that part run to run on CPU (the census's facts).

For each op of ``twinrun.frameworks.torch.census.KNOWN``: its time by default, under
``torch.use_deterministic_algorithms(True)``, and with the op-level replacement the census proposes
(``index_add_`` for accumulation, ``index_select`` for a lookup), on 2 threads, interleaved over rounds,
medians; and whether each repeats bitwise over ``--repeats`` calls. The ratios printed are what
``census.KNOWN`` stores (re-measure and update them there when torch changes).

    python benchmarks/bench_census.py [--rounds 15] [--repeats 10] [--cells 64] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from collections.abc import Callable
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--cells", type=int, default=64, help="rows accumulated into (64: FACTS.md's pooling)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    # The representative size of FACTS.md: 100k rows of 16 values into 64 cells (a scatter pooling),
    # and the lookup of examples/nondeterminism/nondeterministic_kernel.py (114,688 indices, 1088 rows).
    n, cells, d = 100_000, args.cells, 16
    idx = torch.randint(0, cells, (n,), generator=g)
    src = torch.randn(n, d, generator=g)
    flat_idx = torch.randint(0, cells * d, (n * d,), generator=g)
    flat_src = torch.randn(n * d, generator=g)
    look = torch.randint(0, 1088, (114_688,), generator=g)
    table = torch.randn(1088, d, generator=g)
    upstream = torch.randn(114_688, d, generator=g)

    def lookup_backward(select: bool) -> Callable[[], Any]:
        def run() -> Any:
            t = table.clone().requires_grad_(True)
            out = t.index_select(0, look) if select else t[look]
            out.backward(upstream)
            return t.grad
        return run

    def embedding_backward() -> Any:
        t = table.clone().requires_grad_(True)
        torch.nn.functional.embedding(look, t).backward(upstream)
        return t.grad

    wide = idx[:, None].expand(n, d)
    # name -> (default, {replacement: call}); "deterministic" is the default call under deterministic mode.
    cases: dict[str, tuple[Callable[[], Any], dict[str, Callable[[], Any]]]] = {
        "index_put_(accumulate=True)": (
            lambda: torch.zeros(cells, d).index_put_((idx,), src, accumulate=True),
            {"index_add_": lambda: torch.zeros(cells, d).index_add_(0, idx, src),
             "scatter_add_": lambda: torch.zeros(cells, d).scatter_add_(0, wide, src)}),
        "put_(accumulate=True)": (
            lambda: torch.zeros(cells * d).put_(flat_idx, flat_src, accumulate=True),
            {"index_add_": lambda: torch.zeros(cells * d).index_add_(0, flat_idx, flat_src),
             "scatter_add_": lambda: torch.zeros(cells * d).scatter_add_(0, flat_idx, flat_src)}),
        "index backward (x[idx])": (lookup_backward(False), {"index_select": lookup_backward(True),
                                                             "embedding": embedding_backward}),
        "index_put_(accumulate=False), duplicate indices": (
            lambda: torch.zeros(cells, d).index_put_((idx,), src, accumulate=False),
            {}),
        "index_copy_, duplicate indices": (lambda: torch.zeros(cells, d).index_copy_(0, idx, src), {}),
    }

    def timed(f: Callable[[], Any], deterministic: bool) -> float:
        torch.use_deterministic_algorithms(deterministic)
        t0 = time.perf_counter()
        f()
        return time.perf_counter() - t0

    def digests(f: Callable[[], Any], deterministic: bool) -> int:
        torch.use_deterministic_algorithms(deterministic)
        return len({hashlib.sha1(f().numpy().tobytes()).hexdigest() for _ in range(args.repeats)})

    rows = []
    for name, (default, replacements) in cases.items():
        calls = {"default": (default, False), "deterministic": (default, True),
                 **{k: (f, False) for k, f in replacements.items()}}
        times: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(args.rounds):   # interleaved: a noisy neighbour hits every variant alike
            for k, (f, det) in calls.items():
                times[k].append(timed(f, det))
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"op": name, "default_ms": round(med["default"] * 1e3, 2),
                     "ratio": {k: round(med[k] / med["default"], 2) for k in calls if k != "default"},
                     "distinct": {k: digests(f, det) for k, (f, det) in calls.items()}})
    torch.use_deterministic_algorithms(False)
    if args.json:
        print(json.dumps({"torch": torch.__version__, "threads": 2, "rows": rows}, indent=1))
        return
    print(f"torch {torch.__version__}, 2 threads, medians of {args.rounds} interleaved rounds, "
          f"distinct results of {args.repeats} calls")
    for r in rows:
        ratios = "  ".join(f"{k} x{v}" for k, v in r["ratio"].items())
        distinct = " ".join(f"{k}={v}" for k, v in r["distinct"].items())
        print(f"{r['op']:48s} default {r['default_ms']:7.2f} ms  {ratios}  | distinct: {distinct}")


if __name__ == "__main__":
    main()
