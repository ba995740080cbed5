"""A small CNN trained on scikit-learn's digits: the test suite's real training script.

Plain PyTorch, no twinrun import: ``twinrun run``/``check`` must record it unchanged.
Options: --steps N, --batch B, --seed S (torch.manual_seed; omit for an unseeded init),
--wide (a wide 2048 -> 10 last layer, whose grad SGEMM depends on the thread count),
--raise-at K (raise at step K), --sleep SECONDS (per step), --eval (an eval pass per step),
--flip-at K (perturb the batch at step K when the TWINRUN_TEST_FLIP variable is set).
"""

import argparse
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits


class SmallCNN(nn.Module):
    def __init__(self, wide: bool = False):
        super().__init__()
        c = 32 if wide else 8
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, c, 3, padding=1),
        )
        self.act = nn.ReLU()
        self.classifier = nn.Linear(c * 8 * 8, 10)

    def forward(self, x):
        h = self.act(self.features(x))
        h = self.act(h)  # the same module twice: a call index
        return self.classifier(h.flatten(1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--wide", action="store_true")
    p.add_argument("--raise-at", type=int, default=None)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--eval", action="store_true")
    p.add_argument("--flip-at", type=int, default=None)
    args = p.parse_args()

    if args.seed is not None:
        torch.manual_seed(args.seed)
    digits = load_digits()
    x = torch.from_numpy((digits.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    model = SmallCNN(wide=args.wide)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(1234)  # data order fixed in every run
    for step in range(args.steps):
        if step == args.raise_at:
            raise RuntimeError(f"boom at step {step}")
        idx = torch.randint(0, len(x), (args.batch,), generator=gen)
        xb = x[idx]
        if step == args.flip_at and os.environ.get("TWINRUN_TEST_FLIP"):
            xb = xb.flip(0)  # the same samples in another order
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), y[idx])
        loss.backward()
        opt.step()
        if args.eval:
            with torch.no_grad():
                model.eval()
                model(x[:32])
                model.train()
        if args.sleep:
            time.sleep(args.sleep)
    print(f"final loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
