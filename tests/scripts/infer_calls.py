"""Three inference calls of one model, on batches of 6, 5 and 4 rows, passed as keyword arguments."""

import torch
from torch import nn


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(32, 8), nn.Linear(32, 8)

    def forward(self, x: torch.Tensor, *, y: torch.Tensor) -> dict:
        return {"sum": self.a(x) + self.b(y), "scale": torch.tensor(2.0)}   # the scalar is not per row


torch.manual_seed(0)
model = TwoInputs().eval()
with torch.no_grad():
    for rows in (6, 5, 4):
        out = model(torch.randn(rows, 32), y=torch.randn(rows, 32))
        print(rows, out["sum"].shape)
