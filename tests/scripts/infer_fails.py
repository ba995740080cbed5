"""An inference script that fails after its model call."""

import torch
from torch import nn

model = nn.Linear(8, 2).eval()
with torch.no_grad():
    model(torch.randn(4, 8))
raise RuntimeError("the script's own error")
