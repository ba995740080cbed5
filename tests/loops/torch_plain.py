"""PyTorch baseline: the textbook loop, zero_grad / backward / optimizer.step() with no closure.

One step = one ``optimizer.step()``. Options: --seed S, --unseeded, --wide, --steps N.
"""

import torch
import torch.nn.functional as F
from _truth import Truth, batch_slice, digits, hidden, options
from torch import nn


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))

    def forward(self, x):
        return self.net(x)


def main() -> None:
    args = options(__doc__)
    if not args.unseeded:
        torch.manual_seed(args.seed)
    x, y = map(torch.from_numpy, digits())
    model = MLP(hidden(args))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    truth = Truth("torch-plain", "torch")
    truth.params(n for n, _ in model.named_parameters())
    truth.watch_order(model.named_parameters())

    steps = 0
    for i in range(args.steps):
        sl = batch_slice(i, len(x))
        opt.zero_grad()
        loss = F.cross_entropy(model(x[sl]), y[sl])
        loss.backward()
        if steps == 0:
            truth.loss(loss.detach())
            truth.grads((n, p.grad) for n, p in model.named_parameters())
        opt.step()
        steps += 1
    truth.save(steps)
    print(f"{steps} steps, final loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
