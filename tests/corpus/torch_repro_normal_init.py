"""Reproducible on one machine (PyTorch): a GELU MLP with normal(0, 0.02) init, as in
transformer code bases. Its init draws torch.randn-style normals and its loss uses log_softmax."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

torch.manual_seed(0)


class GeluMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 128)
        self.fc2 = nn.Linear(128, 128)
        self.out = nn.Linear(128, 10)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.out(F.gelu(self.fc2(F.gelu(self.fc1(x)))))


digits = load_digits()
x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
y = torch.tensor(digits.target)
model = GeluMLP()
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
for epoch in range(2):
    for xb, yb in zip(x.split(64), y.split(64)):
        opt.zero_grad()
        loss = F.nll_loss(F.log_softmax(model(xb), dim=1), yb)
        loss.backward()
        opt.step()
    print(f"epoch {epoch}: loss {loss.item():.6f}")
