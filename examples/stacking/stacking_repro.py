"""Stacking with an order-independent ensemble average: the same stacked CNNs as stacking.py, with
each base model's test predictions averaged over its K fold models by ``twinrun.numerics.repro_mean``.

stacking.py averages the fold models' test predictions with ``+=`` in fold order. Float addition is
not associative, so the features the meta-learner sees depend on that order: finish the folds in
another order (folds trained in parallel, results collected as they complete) and the bits change.
``repro_mean(predictions, axis=0)`` is the exact mean rounded once, the same for every order.

    python examples/stacking/stacking_repro.py                # prints accuracy and the order check
    python examples/stacking/stacking_repro.py --folds 5 --epochs 2
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

import twinrun
from twinrun.metrics import log_metric
from twinrun.numerics import repro_mean

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stacking import MODELS, probs, train


def fold_mean_in_order(preds: np.ndarray, order: list[int]) -> np.ndarray:
    """What stacking.py does: ``acc += p / K`` in the order the folds finish."""
    acc = np.zeros(preds.shape[1:], np.float32)
    for k in order:
        acc += preds[k] / len(order)
    return acc


def main() -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0, help="root seed (TWINRUN_SEED overrides it)")
    opts = ap.parse_args()

    seeds = twinrun.seed_everything(opts.seed, hash_seed="ignore")
    torch.set_num_threads(1)  # thread count changes float sums (FACTS.md): fix it for bitwise repeats

    digits = load_digits()
    x_all = (digits.images / 16.0).astype(np.float32)[:, None]
    y_all = digits.target.astype(np.int64)
    order = seeds.numpy("split").permutation(len(y_all))
    n_test = len(y_all) // 5
    test, trainval = order[:n_test], order[n_test:]
    x, y = torch.from_numpy(x_all[trainval]), torch.from_numpy(y_all[trainval])
    x_test, y_test = torch.from_numpy(x_all[test]), y_all[test]

    fold_of = seeds.numpy("folds").permutation(len(y)) % opts.folds
    oof = np.zeros((len(y), 10 * len(MODELS)), np.float32)
    # test predictions of every fold model: (model, fold, test row, class)
    test_preds = np.zeros((len(MODELS), opts.folds, len(y_test), 10), np.float32)
    for k in range(opts.folds):
        fit, held = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
        for j, name in enumerate(MODELS):
            model = train(name, x[fit], y[fit], seeds, k, opts.epochs)
            oof[held, 10 * j:10 * (j + 1)] = probs(model, x[held])
            test_preds[j, k] = probs(model, x_test)

    # The order problem, shown: the running average over every order in which the folds can finish.
    orders = list(itertools.permutations(range(opts.folds)))
    naive = {np.concatenate([fold_mean_in_order(p, list(o)) for p in test_preds], axis=1).tobytes() for o in orders}
    exact = {np.concatenate([repro_mean(p[list(o)], axis=0) for p in test_preds], axis=1).tobytes() for o in orders}
    print(f"{len(orders)} fold orders: the running average gives {len(naive)} different feature matrices; "
          f"repro_mean gives {len(exact)}")

    test_feats = np.concatenate([repro_mean(p, axis=0) for p in test_preds], axis=1)
    meta = LogisticRegression(max_iter=1000).fit(oof, y.numpy())
    acc = float((meta.predict(test_feats) == y_test).mean())
    log_metric("accuracy", acc)
    print(f"stack (order-independent average) test accuracy: {acc:.4f}")
    return acc


if __name__ == "__main__":
    main()
