"""Same seed, same data, same machine, different results from a differentiable histogram.

The hidden activations' distribution is pushed towards a standard normal through a soft
histogram (a kernel density on 64 bins), added to the classification loss.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

torch.manual_seed(0)


class SoftHistogram(nn.Module):
    def __init__(self, bins=64, low=-4.0, high=4.0):
        super().__init__()
        self.register_buffer("centers", torch.linspace(low, high, bins))
        self.width = (high - low) / bins

    def forward(self, values):
        weights = torch.exp(-0.5 * ((values.reshape(-1, 1) - self.centers) / self.width) ** 2)
        bin_index = torch.arange(len(self.centers)).expand_as(weights).reshape(-1)
        hist = torch.zeros(len(self.centers))
        hist.scatter_add_(0, bin_index, weights.reshape(-1))
        return hist / hist.sum()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 256)
        self.hist = SoftHistogram()
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(F.relu(h)), self.hist(h)


digits = load_digits()
x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
y = torch.tensor(digits.target)
target = torch.distributions.Normal(0.0, 1.0).log_prob(torch.linspace(-4.0, 4.0, 64)).softmax(0)

model = Net()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(2):
    for start in range(0, len(x), 256):
        logits, hist = model(x[start:start + 256])
        loss = F.cross_entropy(logits, y[start:start + 256]) + 0.1 * F.kl_div(hist.clamp_min(1e-8).log(), target,
                                                                              reduction="sum")
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"epoch {epoch}: loss {loss.item():.6f}")
