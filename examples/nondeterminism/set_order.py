"""A seeded model whose input features are ordered by iterating a set of strings.

String hashes change with every interpreter start (PYTHONHASHSEED), and so does the order in which a
set of strings is iterated: every run feeds the pixels to the model in another column order.
twinrun doctor: cause `hash-seed` (the runs part at the first `input`); fixed in fixed/set_order.py.
Run it twice and compare the digests: `python set_order.py`.
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
columns = {f"pixel_{r}_{c}": 8 * r + c for r in range(8) for c in range(8)}
columns["label"] = -1
features = set(columns) - {"label"}  # a set: its iteration order follows the string hashes
X = X[:, [columns[name] for name in features]]

model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _epoch in range(2):
    for i in range(0, len(X) - 31, 32):
        xb, yb = torch.from_numpy(np.ascontiguousarray(X[i:i + 32])), torch.from_numpy(y[i:i + 32])
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
print("final loss", round(loss.item(), 4), "weights", weights_digest(model))
