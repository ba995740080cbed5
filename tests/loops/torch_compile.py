"""PyTorch, ``model = torch.compile(model)``, then the plain loop with ``optimizer.step()``.

A user gets the default backend, ``inductor`` (on CPU it generates C++ and needs a compiler, here
gcc). ``--backend aot_eager`` traces the same graphs without generating code (faster to compile).
One step = one ``optimizer.step()``. Options: --seed S, --unseeded, --wide, --steps N,
--backend inductor|aot_eager|eager.
"""

import time

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
    args = options(__doc__, backend={"choices": ["inductor", "aot_eager", "eager"], "default": "inductor"})
    if not args.unseeded:
        torch.manual_seed(args.seed)
    x, y = map(torch.from_numpy, digits())
    model = MLP(hidden(args))
    names = [n for n, _ in model.named_parameters()]  # the user's names, before the wrapper adds `_orig_mod.`
    cmodel = torch.compile(model, backend=args.backend)
    opt = torch.optim.SGD(cmodel.parameters(), lr=0.1, momentum=0.9)
    truth = Truth(f"torch-compile-{args.backend}", "torch")
    truth.params(names)
    truth.watch_order(zip(names, model.parameters()))

    steps = 0
    t0 = time.perf_counter()
    for i in range(args.steps):
        sl = batch_slice(i, len(x))
        opt.zero_grad()
        loss = F.cross_entropy(cmodel(x[sl]), y[sl])
        loss.backward()
        if steps == 0:
            first = time.perf_counter() - t0
            truth.loss(loss.detach())
            truth.grads((n, p.grad) for n, p in zip(names, model.parameters()))
        opt.step()
        steps += 1
    truth.save(steps, first_step_seconds=first)
    print(f"{steps} steps, final loss {loss.item():.4f}, first step (compile) {first:.1f} s")


if __name__ == "__main__":
    main()
