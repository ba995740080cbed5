"""Results not comparable across runs (PyTorch, my own train_step).

I train on a 512-image subset; the initial weights repeat, yet each run ends elsewhere.
"""
import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

torch.manual_seed(0)


def train_step(model, optimizer, loss_fn, xb, yb):
    model.train()
    optimizer.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    optimizer.step()
    return loss.item()


digits = load_digits()
x = torch.tensor(digits.data[:512] / 16.0, dtype=torch.float32)
y = torch.tensor(digits.target[:512])

model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
loss_fn = nn.CrossEntropyLoss()

for epoch in range(3):
    perm = np.random.permutation(len(x))  # corpus: call-site
    losses = [train_step(model, optimizer, loss_fn, x[perm[i:i + 64]], y[perm[i:i + 64]])
              for i in range(0, len(x), 64)]
    print(f"epoch {epoch}: mean loss {np.mean(losses):.4f}")
