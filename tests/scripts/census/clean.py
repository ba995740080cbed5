"""A seeded MLP on the digits that uses no op that parts run to run (index_add_ pools, embedding looks up)."""

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

path = Path(importlib.util.find_spec("sklearn").submodule_search_locations[0]) / "datasets/data/digits.csv.gz"
data = np.loadtxt(path, delimiter=",", dtype=np.float32)
X, y = torch.from_numpy(data[:256, :-1] / 16.0), torch.from_numpy(data[:256, -1].astype(np.int64))

torch.manual_seed(0)
table = nn.Embedding(17, 8)
head = nn.Linear(8, 10)
opt = torch.optim.SGD([*table.parameters(), *head.parameters()], lr=0.1)
levels = (X * 16).round().long()
owner = torch.arange(256).repeat_interleave(64)
for _ in range(3):
    pooled = torch.zeros(256, 8).index_add_(0, owner, table(levels.reshape(-1)))
    loss = nn.functional.cross_entropy(head(pooled / 64), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print("loss", round(loss.item(), 6))
