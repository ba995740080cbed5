"""The demo's training script: a small CNN on scikit-learn's bundled digits images.

Run it as ``python -m twinrun._demo.digits_cnn`` or through ``twinrun run``/``check``; ``twinrun demo``
uses it. Options: ``--steps N`` (default 30), ``--unseeded`` (no ``seed_everything``: parameter
init then differs run to run), ``--batch B`` (default 64).

The last layer is a wide linear layer (2048 -> 10) on purpose: the gradient of its weight is an
SGEMM whose blocking depends on the thread count, so 1 and 2 threads give different bits.
"""

from __future__ import annotations

import argparse
from typing import Any


def build_model() -> Any:
    from collections import OrderedDict

    import torch.nn as nn

    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 16, 3, padding=1)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("relu2", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("classifier", nn.Linear(32 * 8 * 8, 10)),
    ]))


def load_data() -> tuple[Any, Any]:
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy((digits.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    return x, y


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--unseeded", action="store_true")
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F

    import twinrun

    if not args.unseeded:
        seeds = twinrun.seed_everything(0, hash_seed="ignore")  # no set or dict order decides anything here
        gen = seeds.torch("data")
    else:
        gen = torch.Generator().manual_seed(0)  # data order fixed; only init is left unseeded
    x, y = load_data()
    model = build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _step in range(args.steps):
        idx = torch.randint(0, len(x), (args.batch,), generator=gen)
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    twinrun.log_metric("accuracy", acc)
    twinrun.log_metric("loss", loss.item())


if __name__ == "__main__":
    main()
