"""PyTorch, gradients from ``torch.autograd.grad`` and a hand-written update: ``.grad`` is never set.

The pattern of meta-learning and functional code: ``grads = torch.autograd.grad(loss, params)``,
then ``p.sub_(lr * g)`` under ``torch.no_grad()``. One step = one round of updates.
Options: --seed S, --unseeded, --wide, --steps N.
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
    names, params = zip(*model.named_parameters())
    lr = 0.1
    truth = Truth("torch-autograd-grad", "torch")
    truth.params(names)
    truth.watch_order(zip(names, params))

    steps = 0
    for i in range(args.steps):
        sl = batch_slice(i, len(x))
        loss = F.cross_entropy(model(x[sl]), y[sl])
        grads = torch.autograd.grad(loss, params)
        if steps == 0:
            truth.loss(loss.detach())
            truth.grads(zip(names, grads))
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(lr * g)
        steps += 1
    truth.save(steps)
    print(f"{steps} steps, final loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
