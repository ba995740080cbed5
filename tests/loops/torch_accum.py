"""PyTorch with gradient accumulation: two backward passes (micro-batches) per optimizer step.

One step = one ``optimizer.step()`` = two micro-batches of 32. Options: --seed S, --unseeded,
--wide, --steps N (optimizer steps).
"""

import torch
import torch.nn.functional as F
from _truth import Truth, batch_slice, digits, hidden, options
from torch import nn

ACCUM = 2


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
    truth = Truth("torch-accum", "torch", notes="grad events of step 0: after each backward pass (#1 = accumulated)")
    truth.params(n for n, _ in model.named_parameters())
    truth.watch_order(model.named_parameters())

    steps = 0
    opt.zero_grad()
    for i in range(args.steps * ACCUM):
        sl = batch_slice(i, len(x), batch=32)
        loss = F.cross_entropy(model(x[sl]), y[sl]) / ACCUM
        loss.backward()
        if steps == 0:
            truth.loss(loss.detach())
            truth.grads(((n, p.grad) for n, p in model.named_parameters()), call=i % ACCUM)
        if (i + 1) % ACCUM == 0:
            opt.step()
            opt.zero_grad()
            steps += 1
    truth.save(steps, backward_calls_step0=ACCUM)
    print(f"{steps} steps, final loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
