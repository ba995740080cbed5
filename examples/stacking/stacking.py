"""Stacked CNNs on scikit-learn's digits: two small CNNs, out-of-fold predictions, a logistic-regression
meta-learner. Every source of randomness comes from a named twinrun stream, so the whole run repeats
bitwise and a sweep can vary one source at a time:

- ``init``:  each base model's initial weights (``torch.manual_seed(seeds.int("init", model, fold))``);
- ``data``:  each model's batch order (a ``seeds.torch("data", model, fold)`` generator for its loader);
- ``folds``: the K-fold split (``seeds.numpy("folds")``);
- ``split``: the held-out test split (``seeds.numpy("split")``).

    python examples/stacking/stacking.py                 # stacked ensemble, prints and logs accuracy
    python examples/stacking/stacking.py --model cnn     # one CNN alone, for comparison
    twinrun sweep examples/stacking/stacking.py --seeds 5 --vary init -o stack.db
    twinrun sweep examples/stacking/stacking.py --seeds 5 --vary init -o cnn.db -- --model cnn
    twinrun compare stack.db cnn.db
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from torch import nn

import twinrun
from twinrun.metrics import log_metric


def cnn_a() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


def cnn_b() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 12, 5, padding=2), nn.ReLU(), nn.Conv2d(12, 12, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12 * 2 * 2, 10))


MODELS = {"cnn_a": cnn_a, "cnn_b": cnn_b}


def train(name: str, x: torch.Tensor, y: torch.Tensor, seeds, tag, epochs: int) -> nn.Module:
    """Train one base model; its init and batch order come from the ``init`` and ``data`` streams."""
    torch.manual_seed(seeds.int("init", name, tag))
    model = MODELS[name]()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True,
                                         generator=seeds.torch("data", name, tag))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def probs(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    return torch.softmax(model(x), dim=1).numpy()


def main() -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["stack", "cnn"], default="stack")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="root seed (TWINRUN_SEED overrides it)")
    opts = ap.parse_args()

    # hash_seed="ignore": nothing here iterates a set or dict of str in a hash-dependent order.
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

    if opts.model == "cnn":
        model = train("cnn_a", x, y, seeds, "full", opts.epochs)
        acc = float((probs(model, x_test).argmax(1) == y_test).mean())
    else:
        fold_of = seeds.numpy("folds").permutation(len(y)) % opts.folds
        oof = np.zeros((len(y), 10 * len(MODELS)), np.float32)
        test_feats = np.zeros((len(y_test), 10 * len(MODELS)), np.float32)
        for k in range(opts.folds):
            fit, held = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
            for j, name in enumerate(MODELS):
                model = train(name, x[fit], y[fit], seeds, k, opts.epochs)
                oof[held, 10 * j:10 * (j + 1)] = probs(model, x[held])
                test_feats[:, 10 * j:10 * (j + 1)] += probs(model, x_test) / opts.folds
        meta = LogisticRegression(max_iter=1000).fit(oof, y.numpy())
        acc = float((meta.predict(test_feats) == y_test).mean())
    log_metric("accuracy", acc)
    print(f"{opts.model} test accuracy: {acc:.4f}")
    return acc


if __name__ == "__main__":
    main()
