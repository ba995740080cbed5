"""Logistic regression in NumPy on scikit-learn's digits (3 vs 8): a fast sweep script with
learning curves, for the report tests (no framework import, so a run costs well under a second).

It logs ``loss`` at every step and ``accuracy`` every ``--eval-every`` steps with
``twinrun.log_metric(..., step=i)``. Seeds come from ``twinrun.seed_everything``: the ``init``
stream draws the weights, the ``data`` stream the mini-batches. For the tests: --fail-seed S raises
when the varied seed is S; --nan-seed S reports NaN accuracy when it is S; --extra-name NAME logs one
more metric under NAME (to test that odd names are escaped); --lr sets the learning rate.
"""

import argparse
import importlib.util
import os
from pathlib import Path

import numpy as np

import twinrun


def varied_seed() -> int | None:
    for var in ("TWINRUN_SEED_INIT", "TWINRUN_SEED_DATA", "TWINRUN_SEED"):
        if var in os.environ:
            return int(os.environ[var])
    return None


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--fail-seed", type=int, default=None)
    p.add_argument("--nan-seed", type=int, default=None)
    p.add_argument("--extra-name", default=None)
    args = p.parse_args()

    seeds = twinrun.seed_everything(0, hash_seed="ignore")
    seed = varied_seed()
    if args.fail_seed is not None and seed == args.fail_seed:
        raise RuntimeError(f"failing on purpose for seed {seed} (--fail-seed)")
    # scikit-learn's bundled digits, read from its data file (importing sklearn would cost a second)
    path = Path(importlib.util.find_spec("sklearn").submodule_search_locations[0]) / "datasets/data/digits.csv.gz"
    data = np.loadtxt(path, delimiter=",")
    keep = (data[:, -1] == 3) | (data[:, -1] == 8)
    x = data[keep, :-1] / 16.0
    y = (data[keep, -1] == 8).astype(float)
    x_train, y_train, x_test, y_test = x[:200], y[:200], x[200:], y[200:]
    w = seeds.numpy("init").normal(0.0, 0.5, size=x.shape[1])
    b = 0.0
    batches = seeds.numpy("data")
    acc = float("nan")
    for step in range(args.steps):
        idx = batches.integers(0, len(x_train), size=16)
        z = x_train[idx] @ w + b
        pr = 1.0 / (1.0 + np.exp(-z))
        eps = 1e-9
        loss = float(-np.mean(y_train[idx] * np.log(pr + eps) + (1 - y_train[idx]) * np.log(1 - pr + eps)))
        g = pr - y_train[idx]
        w -= args.lr * x_train[idx].T @ g / len(idx)
        b -= args.lr * float(g.mean())
        twinrun.log_metric("loss", loss, step=step)
        if (step + 1) % args.eval_every == 0 or step == args.steps - 1:
            acc = float(((x_test @ w + b > 0) == (y_test > 0.5)).mean())
            if args.nan_seed is not None and seed == args.nan_seed:
                acc = float("nan")
            twinrun.log_metric("accuracy", acc, step=step)
    if args.extra_name:
        twinrun.log_metric(args.extra_name, float(np.abs(w).mean()))
    print(f"final accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
