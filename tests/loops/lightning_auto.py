"""Lightning 2.6, ``Trainer.fit`` with the default automatic optimisation.

Lightning calls ``optimizer.step(closure)``: the closure runs ``training_step``, ``zero_grad`` and
``backward`` inside the torch optimizer's ``step``. One step = one optimizer step (``global_step``).
Options: --seed S, --unseeded, --wide, --steps N (``max_steps``), --callback (``training_step`` calls
``self.net(x)``, not ``self(x)``, and the trainer gets ``twinrun.lightning.Callback()``, which names
the parameters under the LightningModule: ``net.0.weight``, not ``0.weight``).
"""

import tempfile

import lightning as L
import torch
import torch.nn.functional as F
from _truth import BATCH, Truth, digits, hidden, options
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class LitMLP(L.LightningModule):
    def __init__(self, width: int, truth: Truth, direct: bool = False):
        super().__init__()
        self.direct = direct
        self.net = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
        self.truth = truth

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x) if self.direct else self(x), y)
        if self.global_step == 0:
            self.truth.loss(loss.detach())
        return loss

    def on_after_backward(self):
        # Lightning's own hook, called inside the closure right after backward
        if self.global_step == 0:
            self.truth.grads((n, p.grad) for n, p in self.named_parameters())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def main() -> None:
    args = options(__doc__, callback={"action": "store_true"})
    if not args.unseeded:
        L.seed_everything(args.seed, verbose=False)
    x, y = map(torch.from_numpy, digits())
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=False)
    truth = Truth("lightning-auto", "torch")
    model = LitMLP(hidden(args), truth, direct=args.callback)
    callbacks = []
    if args.callback:
        import twinrun.lightning

        callbacks.append(twinrun.lightning.Callback())
    truth.params(n for n, _ in model.named_parameters())
    truth.watch_order(model.named_parameters())
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                            default_root_dir=root)
        trainer.fit(model, loader)
    truth.save(trainer.global_step)
    print(f"{trainer.global_step} steps")


if __name__ == "__main__":
    main()
