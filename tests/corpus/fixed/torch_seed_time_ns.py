"""Identical parameters, different results, even though I log the seed.

I seed everything at the start and print the seed so that I can reproduce a run
later, but two runs with identical hyperparameters never give the same curve.
"""
import random
import time

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

seed = 0
print(f"seed = {seed}")
random.seed(seed)
np.random.seed(seed)
torch.manual_seed(seed)

digits = load_digits()
x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
y = torch.tensor(digits.target)

model = nn.Sequential(nn.Linear(64, 48), nn.Tanh(), nn.Linear(48, 10))
loss_fn = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

for epoch in range(2):
    perm = torch.randperm(len(x))
    for start in range(0, len(x), 100):
        idx = perm[start:start + 100]

        def closure():
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            return loss

        loss = optimizer.step(closure)
    print(f"epoch {epoch}: loss {loss.item():.4f}")
