"""A seeded model, but the dataset's noise augmentation draws from an unseeded NumPy Generator.

twinrun doctor: cause `data-pipeline`, detail `content` (the runs part at the first `input`);
fixed in fixed/numpy_augment.py. Run it twice and compare the digests: `python numpy_augment.py`.
"""

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


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


class NoisyDigits(Dataset):
    def __init__(self, X, y):
        self.X, self.y = X, y
        self.rng = np.random.default_rng()  # no seed: fresh OS entropy on every run

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        x = self.X[i] + self.rng.normal(0.0, 0.05, size=self.X.shape[1]).astype(np.float32)
        return torch.from_numpy(x), int(self.y[i])


torch.manual_seed(0)
X, y = load_digits()
model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
loader = DataLoader(NoisyDigits(X, y), batch_size=32, shuffle=True)
for _epoch in range(2):
    for xb, yb in loader:
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
print("final loss", round(loss.item(), 4), "weights", weights_digest(model))
