"""Many small module calls: an ``LSTMCell`` (hidden 32) unrolled over 200 time steps, traced vs untraced.

    PYTHONPATH=src python benchmarks/bench_lstm_cell.py [--steps 5] [--repeats 3]

Issue 10 measured this workload at 4.2x slower traced than untraced; the issue on tracing cost owns
the number, and this benchmark keeps it in view. The input is scikit-learn's digits: each image's 64
pixels, tiled to 200 time steps, one pixel per step (batch 32). Prints the median seconds per
training step of each setting (interleaved) and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import twinrun

T, HIDDEN, BATCH = 200, 32, 32


class Unrolled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(1, HIDDEN)
        self.head = nn.Linear(HIDDEN, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = c = torch.zeros(x.shape[0], HIDDEN)
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t:t + 1], (h, c))
        return self.head(h)


def train(steps: int, x: torch.Tensor, y: torch.Tensor) -> float:
    torch.manual_seed(0)
    model = Unrolled()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    t0 = time.perf_counter()
    for i in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i * BATCH:(i + 1) * BATCH]), y[i * BATCH:(i + 1) * BATCH]).backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    d = load_digits()
    pixels = np.tile(d.data / 16.0, (1, -(-T // 64)))[:, :T].astype(np.float32)
    x, y = torch.from_numpy(pixels), torch.from_numpy(d.target.astype(np.int64))
    times: dict[str, list[float]] = {"untraced": [], "traced": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            times["untraced"].append(train(a.steps, x, y))
            with twinrun.record(Path(tmp) / f"t{r}.trace"):
                times["traced"].append(train(a.steps, x, y))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"LSTMCell x{T}, hidden {HIDDEN}, batch {BATCH}: untraced {med['untraced'] * 1e3:.1f} ms/step, "
          f"traced {med['traced'] * 1e3:.1f} ms/step, ratio {med['traced'] / med['untraced']:.2f}")


if __name__ == "__main__":
    main()
