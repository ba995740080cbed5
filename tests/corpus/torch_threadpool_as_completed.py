"""My CNN changes every run although every seed is set.

Decoding my images is slow, so I load them in a thread pool and train on them as
they arrive. torch, numpy and random are all seeded.
"""
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

random.seed(0)
np.random.seed(0)
torch.manual_seed(0)

digits = load_digits()


def load_sample(i):
    # Stands in for reading and decoding one image file: its latency varies.
    time.sleep(os.urandom(1)[0] / 255 * 0.002)
    return digits.images[i] / 16.0, digits.target[i]


images, targets = [], []
with ThreadPoolExecutor(max_workers=8) as pool:
    futures = [pool.submit(load_sample, i) for i in range(len(digits.target))]
    for fut in as_completed(futures):  # corpus: call-site
        image, target = fut.result()
        images.append(image)
        targets.append(target)

x = torch.tensor(np.stack(images), dtype=torch.float32).unsqueeze(1)
y = torch.tensor(targets)

model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for epoch in range(2):
    for xb, yb in zip(x.split(64), y.split(64)):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
    print(f"epoch {epoch}: loss {loss.item():.4f}")
