"""Same script on two desktops (and twice on one): different models.

I compute gradient-orientation features for every image in a process pool, then train
a linear classifier on them. Everything is seeded.
"""
import multiprocessing
import os
import time

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

np.random.seed(0)
torch.manual_seed(0)

digits = load_digits()


def features(i):
    img = digits.images[i] / 16.0
    gy, gx = np.gradient(img)
    angle = np.arctan2(gy, gx)
    hist, _ = np.histogram(angle, bins=8, range=(-np.pi, np.pi), weights=np.hypot(gx, gy))
    time.sleep(os.urandom(1)[0] / 255 * 0.002)  # the real feature code takes a variable time
    return i, np.concatenate([img.ravel(), hist]).astype(np.float32)


if __name__ == "__main__":
    xs, ys = [], []
    with multiprocessing.Pool(4) as pool:
        for i, feat in pool.imap_unordered(features, range(len(digits.target)), chunksize=4):  # corpus: call-site
            xs.append(feat)
            ys.append(digits.target[i])
    x = torch.tensor(np.stack(xs))
    y = torch.tensor(ys)

    clf = nn.Linear(x.shape[1], 10)
    opt = torch.optim.SGD(clf.parameters(), lr=0.1)
    for epoch in range(3):
        for xb, yb in zip(x.split(128), y.split(128)):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(clf(xb), yb)
            loss.backward()
            opt.step()
        print(f"epoch {epoch}: loss {loss.item():.4f}")
