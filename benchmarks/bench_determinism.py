"""Training-step time of the demo CNN with and without ``twinrun.deterministic()``, side by side.

Prints the ratio deterministic/default (and threads=1/default). Interleaves the modes over several
rounds and takes the median of each, so a noisy neighbour hits both alike.

    python benchmarks/bench_determinism.py [--rounds 7] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    import twinrun
    from twinrun.demo_cnn import build_model, load_data

    x, y = load_data()
    torch.manual_seed(0)
    model = build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)

    def steps() -> float:
        t = time.perf_counter()
        for _ in range(args.steps):
            idx = torch.randint(0, len(x), (64,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        return (time.perf_counter() - t) / args.steps

    modes = {
        "default": lambda: None,
        "deterministic": lambda: twinrun.deterministic(),
        "deterministic_threads1": lambda: twinrun.deterministic(threads=1),
    }
    steps()  # warm-up
    times = {m: [] for m in modes}
    for _ in range(args.rounds):
        for name, enter in modes.items():
            report = enter()
            try:
                times[name].append(steps())
            finally:
                if report is not None:
                    report.restore()
    med = {m: statistics.median(v) for m, v in times.items()}
    out = {
        "step_ms": {m: round(v * 1e3, 3) for m, v in med.items()},
        "ratio_deterministic_vs_default": round(med["deterministic"] / med["default"], 3),
        "ratio_threads1_vs_default": round(med["deterministic_threads1"] / med["default"], 3),
        "threads_default": torch.get_num_threads(),
        "rounds": args.rounds,
        "steps_per_round": args.steps,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"demo CNN training step (batch 64), median of {args.rounds} interleaved rounds:")
        for m, v in out["step_ms"].items():
            print(f"  {m:24s} {v:8.3f} ms")
        print(f"  deterministic / default      = {out['ratio_deterministic_vs_default']}")
        print(f"  deterministic(threads=1) / default = {out['ratio_threads1_vs_default']}")


if __name__ == "__main__":
    main()
