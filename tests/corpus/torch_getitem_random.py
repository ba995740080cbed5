"""torch.manual_seed(0) everywhere, DataLoader, and still no two runs agree.

A Dataset with a random horizontal flip in __getitem__.
"""
import random

import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, Dataset

torch.manual_seed(0)


class Digits(Dataset):
    def __init__(self):
        d = load_digits()
        self.images = torch.tensor(d.images / 16.0, dtype=torch.float32)
        self.targets = torch.tensor(d.target)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        img = self.images[i]
        if random.random() < 0.5:  # corpus: call-site
            img = img.flip(-1)
        return img.unsqueeze(0), self.targets[i]


model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(6 * 4 * 4, 10))
loader = DataLoader(Digits(), batch_size=64, shuffle=True)
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
for epoch in range(2):
    for xb, yb in loader:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
    print(f"epoch {epoch}: loss {loss.item():.4f}")
