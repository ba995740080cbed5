"""PyTorch, two optimizers: a tiny GAN on the digits (the DCGAN tutorial's loop, with MLPs).

Each iteration: a discriminator step (``opt_d.step()``), then a generator step (``opt_g.step()``).
One step = one ``optimizer.step()``, so an iteration is two steps; step 0 is the discriminator's.
Options: --seed S, --unseeded, --wide, --steps N (iterations).
"""

import torch
import torch.nn.functional as F
from _truth import Truth, batch_slice, digits, hidden, options
from torch import nn

LATENT = 16


class Generator(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.gen = nn.Sequential(nn.Linear(LATENT, width), nn.ReLU(), nn.Linear(width, 64), nn.Sigmoid())

    def forward(self, z):
        return self.gen(z)


class Discriminator(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        # 10 features after the wide layer: MKL splits the (10 x B) @ (B x 2048) weight-gradient GEMM
        # by thread count (16 or 1 features would not show it; see tests/loops/README.md)
        self.disc = nn.Sequential(nn.Linear(64, width), nn.LeakyReLU(0.2),
                                  nn.Linear(width, 10), nn.LeakyReLU(0.2), nn.Linear(10, 1))

    def forward(self, x):
        return self.disc(x)


def main() -> None:
    args = options(__doc__, steps=3)
    if not args.unseeded:
        torch.manual_seed(args.seed)
    x, _ = map(torch.from_numpy, digits())
    G, D = Generator(hidden(args)), Discriminator(hidden(args))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    noise = torch.Generator().manual_seed(1234)  # the latent draws are fixed in every run
    truth = Truth("torch-gan", "torch", notes="step 0 is the discriminator step: only D has gradients")
    truth.params([n for n, _ in D.named_parameters()] + [n for n, _ in G.named_parameters()])
    truth.watch_order(D.named_parameters())

    steps = 0
    for i in range(args.steps):
        real = x[batch_slice(i, len(x))]
        ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)
        fake = G(torch.randn(len(real), LATENT, generator=noise))

        opt_d.zero_grad()
        loss_d = (F.binary_cross_entropy_with_logits(D(real), ones)
                  + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
        loss_d.backward()
        if steps == 0:
            truth.loss(loss_d.detach())
            truth.grads((n, p.grad) for n, p in D.named_parameters())
        opt_d.step()
        steps += 1

        opt_g.zero_grad()
        loss_g = F.binary_cross_entropy_with_logits(D(fake), ones)
        loss_g.backward()
        opt_g.step()
        steps += 1
    truth.save(steps)
    print(f"{steps} steps, loss_d {loss_d.item():.4f}, loss_g {loss_g.item():.4f}")


if __name__ == "__main__":
    main()
