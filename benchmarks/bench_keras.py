"""Keras: the cost of recording ``model.fit`` and of ``enable_op_determinism``, as ratios in one run.

    python benchmarks/bench_keras.py [--epochs 3] [--repeats 3] [--batch 32]

Trains the example CNN (examples/keras/cnn_fit.py) on the digits for a few epochs in each setting,
interleaved and repeated, after one warm-up epoch (graph tracing) per setting; prints the median time
per step and each ratio to untraced training. Settings: untraced; recorded with every phase;
recorded with ``--capture param``; untraced with ``tf.config.experimental.enable_op_determinism()``.
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
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "examples" / "keras"))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from cnn_fit import build  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from tensorflow.python.framework import config as tf_config  # noqa: E402

from twinrun.recording import record  # noqa: E402


def run(setting: str, x, y, epochs: int, batch: int, folder: str) -> float:
    keras.utils.set_random_seed(1)
    model = build()
    steps = epochs * -(-len(x) // batch)
    if setting == "op-determinism":
        tf_config.enable_op_determinism()
    try:
        if setting.startswith("traced"):
            capture = ("param",) if setting == "traced-param" else None
            options = {"capture": capture} if capture else {}
            with record(Path(folder) / f"{setting}-{time.monotonic_ns()}.trace", **options):
                model.fit(x, y, batch_size=batch, epochs=1, verbose=0)          # warm-up: graph tracing
                t0 = time.perf_counter()
                model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
                return (time.perf_counter() - t0) / steps
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
        return (time.perf_counter() - t0) / steps
    finally:
        if setting == "op-determinism":
            tf_config.disable_op_determinism()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    d = load_digits()
    x = (d.images[..., None] / 16.0).astype("float32")
    y = d.target.astype("int32")
    settings = ["untraced", "traced-all", "traced-param", "op-determinism"]
    times: dict[str, list[float]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for s in settings:
                times[s].append(run(s, x, y, args.epochs, args.batch, folder))
    base = statistics.median(times["untraced"])
    print(f"Keras example CNN, batch {args.batch}, {args.epochs} epochs x {args.repeats} repeats, "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs")
    print(f"{'setting':<16}{'ms/step':>10}{'ratio':>8}")
    for s in settings:
        m = statistics.median(times[s])
        print(f"{s:<16}{m * 1e3:>10.2f}{m / base:>8.2f}")


if __name__ == "__main__":
    main()
