"""Keras 3 ``fit`` recorded on the torch or jax backend (twinrun.keras.Callback): cost per step.

    KERAS_BACKEND=jax python benchmarks/bench_keras_backends.py [--epochs 2] [--repeats 3]

A small CNN on the digits (batch 64, 28 batches an epoch): one warm-up fit per setting (compilation),
then untraced and recorded fits interleaved; prints the median seconds per step of each and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import keras
import numpy as np
from sklearn.datasets import load_digits

import twinrun


def build() -> keras.Model:
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((64,)), keras.layers.Reshape((8, 8, 1)),
                          keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
                          keras.layers.Flatten(), keras.layers.Dense(10, name="out")], name="cnn")
    m.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m


def fit(model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int, trace: Path | None) -> float:
    if trace is None:
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=64, epochs=epochs, shuffle=False, verbose=0)
        t = time.perf_counter() - t0
    else:
        with twinrun.record(trace):   # opening the recording (header, environment) is not timed
            t0 = time.perf_counter()
            model.fit(x, y, batch_size=64, epochs=epochs, shuffle=False, verbose=0)
            t = time.perf_counter() - t0
    return t / (epochs * -(-len(x) // 64))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    times: dict[str, list[float]] = {"untraced": [], "recorded": []}
    with tempfile.TemporaryDirectory() as tmp:
        models = {k: build() for k in times}
        for k, m in models.items():   # warm-up: compilation, building
            fit(m, x, y, 1, Path(tmp) / f"w-{k}.trace" if k == "recorded" else None)
        for r in range(a.repeats):
            for k, m in models.items():
                times[k].append(fit(m, x, y, a.epochs, Path(tmp) / f"{k}-{r}.trace" if k == "recorded" else None))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"backend {keras.backend.backend()}: untraced {med['untraced'] * 1e3:.2f} ms/step, "
          f"recorded {med['recorded'] * 1e3:.2f} ms/step, ratio {med['recorded'] / med['untraced']:.2f}")


if __name__ == "__main__":
    main()
