"""Identical inputs and weights, different outputs.

I load the same pretrained weights and the same data every time, and fine-tune for one
epoch. The loss curve is never the same twice.
"""
import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset


def load_pretrained(model):
    # Stands in for model.load_state_dict(torch.load("pretrained.pt", weights_only=True)):
    # the same weights on every run.
    rng = np.random.default_rng(2024)
    state = {k: torch.tensor(rng.normal(0.0, 0.05, tuple(v.shape)), dtype=torch.float32)
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model


digits = load_digits()
dataset = TensorDataset(torch.tensor(digits.data / 16.0, dtype=torch.float32), torch.tensor(digits.target))
loader = DataLoader(dataset, batch_size=32, shuffle=True)  # corpus: call-site

model = load_pretrained(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
criterion = nn.CrossEntropyLoss()

for step, (xb, yb) in enumerate(loader):
    optimizer.zero_grad()
    loss = criterion(model(xb), yb)
    loss.backward()
    optimizer.step()
    if step % 20 == 0:
        print(f"step {step}: loss {loss.item():.4f}")
