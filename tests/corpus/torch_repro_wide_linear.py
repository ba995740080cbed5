"""Reproducible on one machine (PyTorch): a seeded MLP with a wide 2048-unit layer.

Repeats exactly run after run; its gradients depend on the number of threads (MKL SGEMM).
"""
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

torch.manual_seed(0)

digits = load_digits()
x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
y = torch.tensor(digits.target)

model = nn.Sequential(nn.Linear(64, 2048), nn.ReLU(), nn.Linear(2048, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
criterion = nn.CrossEntropyLoss()


def train(epochs):
    for epoch in range(epochs):
        for start in range(0, len(x), 64):
            optimizer.zero_grad()
            loss = criterion(model(x[start:start + 64]), y[start:start + 64])
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch}: loss {loss.item():.6f}")


train(2)
