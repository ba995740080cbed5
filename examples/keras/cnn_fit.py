"""A small Keras CNN on scikit-learn's digits, trained with ``model.fit(shuffle=True)``.

Plain Keras: ``twinrun run``/``check``/``doctor`` record it without any change. How it is seeded:

    python cnn_fit.py --seeding none             # no seed at all: weights differ on every run
    python cnn_fit.py --seeding tf --seed 1      # tf.random.set_seed only: not enough in Keras 3
    python cnn_fit.py --seeding keras --seed 1   # keras.utils.set_random_seed: repeats
    python cnn_fit.py --seeding twinrun --seed 1 # twinrun.seed_everything: repeats
    python cnn_fit.py --seeds 1,2,3,1            # "weights differ for seeds 1, 2, 3"; the same seed twice

Each training prints one line ``seed=S weights=<digest>`` (``--json``: one JSON list).
"""

import argparse
import hashlib
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits


def seed(how: str, value: int) -> None:
    if how == "tf":
        tf.random.set_seed(value)  # seeds TF ops only; Keras 3 initialisers draw from Python's `random`
    elif how == "keras":
        keras.utils.set_random_seed(value)  # Python, NumPy, TF and Keras's seed generator
    elif how == "twinrun":
        import twinrun

        twinrun.seed_everything(value)


def build() -> keras.Model:
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dropout(0.1, name="dropout"),
        keras.layers.Dense(10, name="logits"),
    ], name="cnn")
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def weights_digest(model: keras.Model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]


def train(how: str, value: int, epochs: int, steps: int | None) -> dict:
    seed(how, value)
    digits = load_digits()
    x = (digits.images[..., None] / 16.0).astype("float32")
    y = digits.target.astype("int32")
    model = build()
    model.fit(x, y, batch_size=32, epochs=epochs, steps_per_epoch=steps, shuffle=True, verbose=0)
    return {"seeding": how, "seed": value, "weights": weights_digest(model)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeding", choices=["none", "tf", "keras", "twinrun"], default="keras")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seeds", default=None, help="comma-separated seeds, trained one after another")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, default=None, help="batches per epoch (default: all)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    results = [train(args.seeding, s, args.epochs, args.steps) for s in seeds]
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            print(f"seed={r['seed']} weights={r['weights']}")


if __name__ == "__main__":
    main()
