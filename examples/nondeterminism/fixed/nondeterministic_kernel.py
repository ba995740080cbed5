"""nondeterministic_kernel.py with the fix doctor proposes: PyTorch's deterministic kernels.
"""


import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

import twinrun


def load_digits():
    """scikit-learn's bundled digits (1797 8x8 images), read straight from its data file."""
    path = Path(importlib.util.find_spec("sklearn").submodule_search_locations[0]) / "datasets/data/digits.csv.gz"
    data = np.loadtxt(path, delimiter=",", dtype=np.float32)
    return data[:, :-1] / 16.0, data[:, -1].astype(np.int64)


def weights_digest(model):
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().numpy().tobytes())
    return h.hexdigest()[:16]


class PixelBag(nn.Module):
    """Each (pixel, intensity) pair has an embedding; an image is the sum of its 64 embeddings."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(64 * 17, 16) * 0.1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        index = torch.arange(64) * 17 + (x * 16).round().long()  # (batch, 64) rows of the table
        return self.head(self.table[index].sum(1))


torch.manual_seed(0)
twinrun.deterministic()  # torch.use_deterministic_algorithms(True) and friends
X, y = load_digits()
model = PixelBag()
opt = torch.optim.SGD(model.parameters(), lr=0.5)
for _epoch in range(20):
    for i in range(0, len(X) - 1791, 1792):
        xb, yb = torch.from_numpy(X[i:i + 1792]), torch.from_numpy(y[i:i + 1792])
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
print("final loss", round(loss.item(), 4), "weights", weights_digest(model))
