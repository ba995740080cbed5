"""Identical inputs and weights, different outputs (PyTorch, noise augmentation).

I add a little Gaussian noise to each batch to regularise. torch.manual_seed(0) is
set at the top and the data order is fixed.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

torch.manual_seed(0)
rng = np.random.default_rng()  # corpus: call-site

digits = load_digits()
x_all = (digits.data / 16.0).astype(np.float32)
y_all = torch.tensor(digits.target)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


net = Net()
opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
for epoch in range(2):
    for start in range(0, len(x_all), 64):
        noisy = x_all[start:start + 64] + rng.normal(0.0, 0.05, size=(len(x_all[start:start + 64]), 64))
        xb = torch.from_numpy(noisy.astype(np.float32))
        opt.zero_grad()
        loss = F.cross_entropy(net(xb), y_all[start:start + 64])
        loss.backward()
        opt.step()
    print(f"epoch {epoch}: loss {loss.item():.4f}")
