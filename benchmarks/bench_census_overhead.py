"""What the census costs a training step: the demo CNN's step with and without the census installed.

Interleaved rounds, medians (a noisy neighbour hits both alike). The census runs only in doctor's one
extra run, for the steps up to the divergence; this says how much slower that run's steps are.

    python benchmarks/bench_census_overhead.py [--rounds 7] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from twinrun._demo.digits_cnn import build_model, load_data
    from twinrun.frameworks.torch import census

    x, y = load_data()
    torch.manual_seed(0)
    model = build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)

    def steps() -> float:
        t = time.perf_counter()
        for _ in range(args.steps):
            idx = torch.randint(0, len(x), (64,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        return (time.perf_counter() - t) / args.steps

    steps()   # warm-up
    times: dict[str, list[float]] = {"default": [], "census": []}
    for _ in range(args.rounds):
        times["default"].append(steps())
        finish = census.install()
        try:
            times["census"].append(steps())
        finally:
            finish()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"demo CNN step (batch 64), medians of {args.rounds} interleaved rounds of {args.steps} steps: "
          f"default {med['default'] * 1e3:.2f} ms, census {med['census'] * 1e3:.2f} ms, "
          f"ratio {med['census'] / med['default']:.2f}")


if __name__ == "__main__":
    main()
