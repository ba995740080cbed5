"""My gradients differ between two runs of the same seeded script (CPU only, no CUDA).

Pixels are quantised to 17 intensity tokens and looked up in a learned table (plus a
position embedding), then a linear classifier; full-batch training with SGD.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

torch.manual_seed(0)
torch.use_deterministic_algorithms(True)


class TokenPixelNet(nn.Module):
    def __init__(self, width=32):
        super().__init__()
        self.value_table = nn.Parameter(torch.randn(17, width) * 0.1)
        self.position = nn.Parameter(torch.zeros(64, width))
        self.head = nn.Linear(width, 10)

    def forward(self, tokens):
        h = self.value_table[tokens] + self.position
        return self.head(torch.tanh(h).mean(dim=1))


digits = load_digits()
tokens = torch.tensor(digits.data, dtype=torch.long)
labels = torch.tensor(digits.target)

model = TokenPixelNet()
opt = torch.optim.SGD(model.parameters(), lr=0.5)
for step in range(4):
    opt.zero_grad()
    loss = F.cross_entropy(model(tokens), labels)
    loss.backward()
    opt.step()
    print(f"step {step}: loss {loss.item():.7f}")
