"""Identical parameters, different results: I seed torch and use deterministic algorithms.

I shuffle the whole training set once per epoch and cut it into batches myself.
The initial weights are the same every time (I checked), the losses are not.
"""
import random

import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

torch.manual_seed(0)
torch.use_deterministic_algorithms(True)

digits = load_digits()
images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
labels = torch.tensor(digits.target)

model = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    nn.Flatten(), nn.Linear(16, 10))
opt = torch.optim.Adam(model.parameters(), lr=3e-3)

indices = list(range(len(images)))
for epoch in range(2):
    random.Random(epoch).shuffle(indices)
    for start in range(0, len(indices), 64):
        batch = indices[start:start + 64]
        opt.zero_grad()
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        loss.backward()
        opt.step()
    print(f"epoch {epoch}: last loss {loss.item():.4f}")
