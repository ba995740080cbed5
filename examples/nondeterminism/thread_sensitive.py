"""A seeded model with a wide hidden layer: it repeats at any fixed thread count, but 1 and 2
threads give other weights.

MKL splits the gradient matrix product of the 2048 -> 10 layer among threads, so another thread count
sums in another order. `twinrun doctor` calls it `reproducible` on this machine and its portability
report says `thread-count`: not stable, with the first step and gradient where 1 thread and the
default part. Fixed (same numbers at any thread count) in fixed/thread_sensitive.py.
Compare: `python thread_sensitive.py` and `OMP_NUM_THREADS=1 python thread_sensitive.py`.
"""


import hashlib
import importlib.util
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


torch.manual_seed(0)
X, y = load_digits()
model = nn.Sequential(nn.Linear(64, 2048), nn.ReLU(), nn.Linear(2048, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for _epoch in range(2):
    for i in range(0, len(X) - 63, 64):
        xb, yb = torch.from_numpy(X[i:i + 64]), torch.from_numpy(y[i:i + 64])
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
print("final loss", round(loss.item(), 4), "weights", weights_digest(model))
