"""Identical inputs and weights, different outputs, with deterministic data and torch.manual_seed(0).

A point-set model: every pixel of every digit is a point (value, row, column), a shared
MLP embeds the points and a scatter pooling sums them per image. Full-batch training.
I print the loss after the first step and it changes in the 7th digit on every run.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

torch.manual_seed(0)


class ScatterSumPool(nn.Module):
    def forward(self, feats, owner, n_sets):
        pooled = feats.new_zeros(n_sets, feats.shape[1])
        return pooled.index_add_(0, owner, feats)


class PointSetNet(nn.Module):
    def __init__(self, width=32):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.pool = ScatterSumPool()
        self.head = nn.Linear(width, 10)

    def forward(self, points, owner, n_sets):
        return self.head(self.pool(self.embed(points), owner, n_sets) / 64.0)


digits = load_digits()
n = len(digits.target)
images = torch.tensor(digits.images / 16.0, dtype=torch.float32).reshape(n, 64)
rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
# One point per (pixel, image): all images' pixel 0 first, then pixel 1, and so on.
values = images.T.reshape(-1, 1)
coords = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).repeat_interleave(n, dim=0) / 7.0
points = torch.cat([values, coords], dim=1)
owner = torch.arange(n).repeat(64)
labels = torch.tensor(digits.target)

model = PointSetNet()
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
for step in range(4):
    opt.zero_grad()
    loss = F.cross_entropy(model(points, owner, n), labels)
    loss.backward()
    opt.step()
    print(f"step {step}: loss {loss.item():.7f}")
