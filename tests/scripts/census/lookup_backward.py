"""A bag-of-pixels model: ``table[index]`` with 114,688 indices into a parameter table.

The forward is a plain lookup; its backward adds the gradient rows of repeated indices with
index_put_(accumulate=True), in an order that changes run to run on 2 threads. ``--steps N``.
"""

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=3)
args = p.parse_args()

path = Path(importlib.util.find_spec("sklearn").submodule_search_locations[0]) / "datasets/data/digits.csv.gz"
data = np.loadtxt(path, delimiter=",", dtype=np.float32)
X, y = torch.from_numpy(data[:1792, :-1] / 16.0), torch.from_numpy(data[:1792, -1].astype(np.int64))



class PixelBag(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(64 * 17, 16) * 0.1)
        self.head = nn.Linear(16, 10)

    def forward(self, index):
        return self.head(self.table[index].sum(1))


torch.manual_seed(0)
torch.set_num_threads(2)
model = PixelBag()
opt = torch.optim.SGD(model.parameters(), lr=0.5)
index = torch.arange(64) * 17 + (X * 16).round().long()
for _ in range(args.steps):
    loss = nn.functional.cross_entropy(model(index), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print("loss", round(loss.item(), 6))
