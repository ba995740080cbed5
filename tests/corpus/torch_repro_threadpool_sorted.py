"""Reproducible (PyTorch): samples loaded in a thread pool with jitter, then put back in
index order and shuffled with a seeded random.Random."""
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

torch.manual_seed(0)
digits = load_digits()


def load_sample(i):
    time.sleep(os.urandom(1)[0] / 255 * 0.002)  # variable latency, as when decoding files
    return i, digits.images[i] / 16.0, digits.target[i]


with ThreadPoolExecutor(max_workers=8) as pool:
    results = [f.result() for f in as_completed([pool.submit(load_sample, i) for i in range(len(digits.target))])]
results.sort(key=lambda r: r[0])  # completion order is not reproducible; index order is
order = list(range(len(results)))
random.Random(0).shuffle(order)
x = torch.tensor(np.stack([results[i][1] for i in order]), dtype=torch.float32).unsqueeze(1)
y = torch.tensor([results[i][2] for i in order])

model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for epoch in range(2):
    for xb, yb in zip(x.split(64), y.split(64)):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
    print(f"epoch {epoch}: loss {loss.item():.6f}")
