"""imap_unordered.py with the fix doctor proposes: the pool hands results back in order.
"""

import hashlib
import importlib.util
import multiprocessing
from pathlib import Path

import numpy as np
import torch
from torch import nn


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


X, y = load_digits()


def prepare(i):
    """Standardise one image (the kind of per-sample work people hand to a pool)."""
    x = X[i]
    return (x - x.mean()) / (x.std() + 1e-6), y[i]


if __name__ == "__main__":
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with multiprocessing.get_context("fork").Pool(4) as pool:
        for _epoch in range(2):
            for start in range(0, len(X) - 31, 32):
                batch = list(pool.imap(prepare, range(start, start + 32)))  # submission order
                xb = torch.from_numpy(np.stack([x for x, _ in batch]))
                yb = torch.tensor([int(label) for _, label in batch])
                loss = nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
    print("final loss", round(loss.item(), 4), "weights", weights_digest(model))
