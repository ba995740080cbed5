"""Inference with a seeded stack of Linear(512, 512) at batch 64 (``--batch-invariant``: under
twinrun.batch_invariant()). A script twinrun probe runs unchanged."""

import sys

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(*[m for _ in range(3) for m in (nn.Linear(512, 512), nn.ReLU())], nn.Linear(512, 10)).eval()
x = torch.randn(64, 512)

if "--batch-invariant" in sys.argv:
    import twinrun

    with twinrun.batch_invariant(), torch.no_grad():
        logits = model(x)
else:
    with torch.no_grad():
        logits = model(x)
print("predicted classes:", logits.argmax(1)[:8].tolist())
