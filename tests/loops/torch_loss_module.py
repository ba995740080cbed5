"""PyTorch, a loss module created on the fly: ``nn.CrossEntropyLoss()(out, y)``.

``--where model`` (default): the model's forward takes the labels and builds the loss module
inside ``forward`` (``loss_fct = CrossEntropyLoss()``, as many Hugging Face models long did);
``--where loop``: the training loop builds it on every iteration. One step = one
``optimizer.step()``. Options: --seed S, --unseeded, --wide, --steps N, --where model|loop.
"""

import torch
from _truth import Truth, batch_slice, digits, hidden, options
from torch import nn


class Classifier(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))

    def forward(self, x, labels=None):
        logits = self.net(x)
        if labels is None:
            return logits
        loss_fct = nn.CrossEntropyLoss()
        return loss_fct(logits, labels)


def main() -> None:
    args = options(__doc__, where={"choices": ["model", "loop"], "default": "model"})
    if not args.unseeded:
        torch.manual_seed(args.seed)
    x, y = map(torch.from_numpy, digits())
    model = Classifier(hidden(args))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    truth = Truth(f"torch-loss-module-{args.where}", "torch")
    truth.params(n for n, _ in model.named_parameters())
    truth.watch_order(model.named_parameters())

    steps = 0
    for i in range(args.steps):
        sl = batch_slice(i, len(x))
        opt.zero_grad()
        if args.where == "model":
            loss = model(x[sl], labels=y[sl])
        else:
            loss = nn.CrossEntropyLoss()(model(x[sl]), y[sl])
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
