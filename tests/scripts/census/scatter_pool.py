"""A point-set classifier whose pooling sums each image's points with index_put_(accumulate=True).

Each 8x8 digit is a set of 64 points (pixel position, intensity); a small MLP embeds every point, and
``SumPool.forward`` adds the points of each image into one row with ``index_put_`` (accumulate=True).
The points are laid out pixel-major (every image's pixel 0, then every image's pixel 1, ...), so the
two threads' halves of the index land on the same rows: on CPU with 2 threads the sum's order, and
so its bits, change from run to run. ``--steps N`` (default 3).
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
X, y = torch.from_numpy(data[:, :-1] / 16.0), torch.from_numpy(data[:, -1].astype(np.int64))
images = X.shape[0]
pos = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij"), -1).reshape(64, 2) / 7
# pixel-major points: (pixel, image) -> x, y, intensity
points = torch.cat([pos[:, None, :].expand(64, images, 2), X.T[:, :, None]], -1).reshape(-1, 3)
owner = torch.arange(images).repeat(64)


class SumPool(nn.Module):
    def forward(self, feats, owner, rows):
        pooled = torch.zeros(rows, feats.shape[1])
        return pooled.index_put_((owner,), feats, accumulate=True)


class PointNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(3, 32), nn.ReLU())
        self.pool = SumPool()
        self.head = nn.Linear(32, 10)

    def forward(self, pts, owner, rows):
        return self.head(self.pool(self.embed(pts), owner, rows) / 64)


torch.manual_seed(0)
torch.set_num_threads(2)
model = PointNet()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(args.steps):
    loss = nn.functional.cross_entropy(model(points, owner, images), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print("loss", round(loss.item(), 6))
