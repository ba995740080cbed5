"""Lightning 2.6, manual optimisation (``self.automatic_optimization = False``).

``training_step`` calls ``opt.zero_grad()``, ``self.manual_backward(loss)`` and ``opt.step()`` on
the ``LightningOptimizer``, which still reaches the torch optimizer as ``step(closure)`` with a
closure that does nothing but call Lightning's hooks. One step = one ``opt.step()``.
Options: --seed S, --unseeded, --wide, --steps N (``max_steps``).
"""

import tempfile

import lightning as L
import torch
import torch.nn.functional as F
from _truth import BATCH, Truth, digits, hidden, options
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class LitMLP(L.LightningModule):
    def __init__(self, width: int, truth: Truth):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
        self.automatic_optimization = False
        self.truth = truth
        self.updates = 0

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        opt = self.optimizers()
        opt.zero_grad()
        loss = F.cross_entropy(self(x), y)
        self.manual_backward(loss)
        if self.updates == 0:
            self.truth.loss(loss.detach())
            self.truth.grads((n, p.grad) for n, p in self.named_parameters())
        opt.step()
        self.updates += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def main() -> None:
    args = options(__doc__)
    if not args.unseeded:
        L.seed_everything(args.seed, verbose=False)
    x, y = map(torch.from_numpy, digits())
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=False)
    truth = Truth("lightning-manual", "torch")
    model = LitMLP(hidden(args), truth)
    truth.params(n for n, _ in model.named_parameters())
    truth.watch_order(model.named_parameters())
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=root)
        trainer.fit(model, loader)
    truth.save(model.updates, global_step=trainer.global_step)
    print(f"{model.updates} steps (global_step {trainer.global_step})")


if __name__ == "__main__":
    main()
