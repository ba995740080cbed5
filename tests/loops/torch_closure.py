"""PyTorch, ``optimizer.step(closure)``: the closure runs forward and backward inside the step.

``--optim sgd`` (default): SGD with momentum, one closure call per step. ``--optim lbfgs``:
full-batch L-BFGS (``max_iter`` 5), which calls the closure several times per ``step()`` and moves
the weights between calls. One step = one ``optimizer.step(closure)``.
Options: --seed S, --unseeded, --wide, --steps N, --optim sgd|lbfgs.
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
    args = options(__doc__, optim={"choices": ["sgd", "lbfgs"], "default": "sgd"})
    if not args.unseeded:
        torch.manual_seed(args.seed)
    x, y = map(torch.from_numpy, digits())
    model = MLP(hidden(args))
    if args.optim == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:
        opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5, history_size=10)
    truth = Truth(f"torch-closure-{args.optim}", "torch")
    truth.params(n for n, _ in model.named_parameters())
    truth.watch_order(model.named_parameters())

    steps = 0
    calls = [0]  # closure calls in the current step
    for i in range(args.steps):
        # L-BFGS is a full-batch method; SGD takes mini-batches
        xb, yb = (x, y) if args.optim == "lbfgs" else (x[batch_slice(i, len(x))], y[batch_slice(i, len(x))])
        calls[0] = 0

        # the closure is used only within this iteration, so reading the loop's variables is right
        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)  # noqa: B023
            loss.backward()
            if steps == 0:  # noqa: B023
                truth.loss(loss.detach())
                truth.grads(((n, p.grad) for n, p in model.named_parameters()), call=calls[0])
            calls[0] += 1
            return loss

        loss = opt.step(closure)
        if steps == 0:
            step0_calls = calls[0]
        steps += 1
    truth.save(steps, backward_calls_step0=step0_calls)
    print(f"{steps} steps, final loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
