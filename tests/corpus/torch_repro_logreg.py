"""Reproducible (PyTorch): seeded softmax regression on the digits, small batches, SGD."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

torch.manual_seed(0)

digits = load_digits()
x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
y = torch.tensor(digits.target)

model = nn.Linear(64, 10)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(2):
    for xb, yb in zip(x.split(16), y.split(16)):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    print(f"epoch {epoch}: loss {F.cross_entropy(model(x), y).item():.6f}")
