"""A small MLP on scikit-learn's digits that reports learning curves: the sweep script of the report tests.

It logs ``loss`` (training loss) at every step and ``accuracy`` (held-out) every ``--eval-every``
steps with ``twinrun.log_metric(..., step=i)``, and the final value of each. Seeds come from
``twinrun.seed_everything``, so ``twinrun sweep --vary init|data`` changes only that stream.
Options: --steps N, --lr LR, --hidden H, --eval-every K; for the report tests, --fail-seed S
(raise when the varied seed is S) and --nan-seed S (report NaN when it is S).
"""

import argparse
import os

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import twinrun


def varied_seed() -> int | None:
    for var in ("TWINRUN_SEED_INIT", "TWINRUN_SEED_DATA", "TWINRUN_SEED"):
        if var in os.environ:
            return int(os.environ[var])
    return None


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--fail-seed", type=int, default=None)
    p.add_argument("--nan-seed", type=int, default=None)
    args = p.parse_args()

    seeds = twinrun.seed_everything(0, hash_seed="ignore")
    seed = varied_seed()
    if args.fail_seed is not None and seed == args.fail_seed:
        raise RuntimeError(f"failing on purpose for seed {seed} (--fail-seed)")
    digits = load_digits()
    x = torch.from_numpy((digits.data / 16.0).astype(np.float32))
    y = torch.from_numpy(digits.target.astype(np.int64))
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
    model = torch.nn.Sequential(torch.nn.Linear(64, args.hidden), torch.nn.ReLU(), torch.nn.Linear(args.hidden, 10))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    gen = seeds.torch("data")
    acc = float("nan")
    for step in range(args.steps):
        idx = torch.randint(0, len(x_train), (32,), generator=gen)
        opt.zero_grad()
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        loss.backward()
        opt.step()
        twinrun.log_metric("loss", loss.item(), step=step)
        if (step + 1) % args.eval_every == 0 or step == args.steps - 1:
            with torch.no_grad():
                acc = (model(x_test).argmax(1) == y_test).float().mean().item()
            if args.nan_seed is not None and seed == args.nan_seed:
                acc = float("nan")
            twinrun.log_metric("accuracy", acc, step=step)
    print(f"final accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
