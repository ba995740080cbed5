"""A wide layer at a batch size whose rows MKL splits across threads by the thread count:
``--rows N`` (default 10), ``--batch-invariant`` to run under twinrun.batch_invariant()."""

import argparse

import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--rows", type=int, default=10)
parser.add_argument("--batch-invariant", action="store_true")
args = parser.parse_args()

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10)).eval()
x = torch.randn(args.rows, 2048)
if args.batch_invariant:
    import twinrun

    with twinrun.batch_invariant(), torch.inference_mode():
        out = model(x)
else:
    with torch.inference_mode():
        out = model(x)
print(out.sum().item())
