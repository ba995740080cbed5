"""A tiny MLP on 64 of scikit-learn's bundled digits, for the pytest plugin's tests.

    --unseeded   do not seed torch: the runs part at initialisation
    --wide N     a hidden layer of N units (1 vs 2 threads part in the classifier's gradient)
    --lr X       another learning rate (a "real change" for a golden trace)

The digits are read from scikit-learn's bundled CSV without importing scikit-learn (that import
would cost each fresh process a second or two).
"""

import argparse
import importlib.util
import os

import numpy as np
import torch

p = argparse.ArgumentParser()
p.add_argument("--unseeded", action="store_true")
p.add_argument("--wide", type=int, default=32)
p.add_argument("--lr", type=float, default=0.1)
p.add_argument("--steps", type=int, default=8)
args = p.parse_args()

spec = importlib.util.find_spec("sklearn")
data = np.loadtxt(os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz"),
                  delimiter=",", max_rows=64)
x = torch.tensor(data[:, :-1] / 16.0, dtype=torch.float32)
y = torch.tensor(data[:, -1], dtype=torch.int64)

if not args.unseeded:
    torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, args.wide), torch.nn.ReLU(), torch.nn.Linear(args.wide, 10))
opt = torch.optim.SGD(model.parameters(), lr=args.lr)
for _ in range(args.steps):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
