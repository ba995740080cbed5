"""A model with index_put_(accumulate=True) of 100k x 16 values into 64 cells: on 2 threads the sum
takes another order on every call (FACTS.md). ``--deterministic``: torch.use_deterministic_algorithms."""

import sys

import torch
from torch import nn


class Scatter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("idx", torch.arange(100_000) % 64)
        self.register_buffer("src", torch.randn(100_000, 16, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cells = torch.zeros(64, 16).index_put_((self.idx,), self.src, accumulate=True)
        return x + cells.sum(0)


torch.set_num_threads(2)
if "--deterministic" in sys.argv:
    torch.use_deterministic_algorithms(True)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 16), Scatter(), nn.Linear(16, 4)).eval()
with torch.no_grad():
    print(model(torch.randn(8, 16)).sum().item())
