"""No inference call of a model: only a training step (with gradients) and plain tensor arithmetic."""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(8, 2)
loss = model(torch.randn(4, 8)).square().mean()
loss.backward()
with torch.no_grad():
    print((torch.randn(4, 8) @ torch.randn(8, 2)).sum().item())
