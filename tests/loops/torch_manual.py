"""PyTorch, weights updated by hand: no optimizer at all.

``--update sub`` (default): ``p -= lr * p.grad`` under ``torch.no_grad()`` (the PyTorch
"What is torch.nn really?" tutorial); ``--update data``: ``p.data.add_(p.grad, alpha=-lr)``
(pytorch/examples word_language_model, regression). One step = one round of updates.
Options: --seed S, --unseeded, --wide, --steps N, --update sub|data.
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
    args = options(__doc__, update={"choices": ["sub", "data"], "default": "sub"})
    if not args.unseeded:
        torch.manual_seed(args.seed)
    x, y = map(torch.from_numpy, digits())
    model = MLP(hidden(args))
    lr = 0.1
    truth = Truth(f"torch-manual-{args.update}", "torch")
    truth.params(n for n, _ in model.named_parameters())
    truth.watch_order(model.named_parameters())

    steps = 0
    for i in range(args.steps):
        sl = batch_slice(i, len(x))
        loss = F.cross_entropy(model(x[sl]), y[sl])
        loss.backward()
        if steps == 0:
            truth.loss(loss.detach())
            truth.grads((n, p.grad) for n, p in model.named_parameters())
        if args.update == "sub":
            with torch.no_grad():
                for p in model.parameters():
                    p -= lr * p.grad
            model.zero_grad()
        else:
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
                p.grad.zero_()
        steps += 1
    truth.save(steps)
    print(f"{steps} steps, final loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
