"""A ``tf.data`` input pipeline with a seeded shuffle and a seeded random-crop augmentation.

    python tfdata_pipeline.py                          # seeded; reshuffles every epoch (the default)
    python tfdata_pipeline.py --no-reshuffle           # seeded; the same order in every epoch
    python tfdata_pipeline.py --seeding twinrun        # seeds from twinrun's named streams
    python tfdata_pipeline.py --unseeded shuffle       # Dataset.shuffle without a seed: order differs
    python tfdata_pipeline.py --unseeded crop          # augmentation from a non-deterministic state

The model's initialisers carry their own seeds and there is no global TensorFlow seed, so what
differs between runs is exactly what the pipeline leaves unseeded. Prints ``weights=<digest>``.
"""

import argparse
import hashlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeding", choices=["explicit", "twinrun"], default="explicit")
    p.add_argument("--unseeded", choices=["none", "shuffle", "crop"], default="none")
    p.add_argument("--no-reshuffle", dest="reshuffle", action="store_false",
                   help="reshuffle_each_iteration=False: every epoch sees the same order")
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()

    if args.seeding == "twinrun":
        import twinrun

        seeds = twinrun.seed_everything(0)
        shuffle_seed, crop_seed = seeds.int("data"), seeds.int("augment")
        init_seeds = [seeds.int("init", "conv"), seeds.int("init", "logits")]
    else:
        shuffle_seed, crop_seed, init_seeds = 7, 11, [1, 2]
    if args.unseeded == "shuffle":
        shuffle_seed = None
    # The pattern TensorFlow recommends for augmentation in tf.data: a seeded Generator makes one
    # seed per element for a stateless op.
    rng = (tf.random.Generator.from_non_deterministic_state() if args.unseeded == "crop"
           else tf.random.Generator.from_seed(crop_seed))

    digits = load_digits()
    x = (digits.images[: args.samples, ..., None] / 16.0).astype("float32")
    y = digits.target[: args.samples].astype("int32")

    def augment(image, label, seed):
        padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]])
        return tf.image.stateless_random_crop(padded, [8, 8, 1], seed=seed), label

    seeds_ds = tf.data.Dataset.from_tensor_slices(rng.make_seeds(args.samples * args.epochs)[0])
    ds = (tf.data.Dataset.from_tensor_slices((x, y))
          .shuffle(args.samples, seed=shuffle_seed, reshuffle_each_iteration=args.reshuffle)
          .repeat(args.epochs))
    ds = (tf.data.Dataset.zip((ds, seeds_ds.map(lambda s: tf.stack([s, s // 2 + 1]))))
          .map(lambda xy, s: augment(xy[0], xy[1], s))
          .batch(args.batch))

    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=init_seeds[0])),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(10, name="logits",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=init_seeds[1])),
    ], name="pipeline_cnn")
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ds, epochs=1, shuffle=False, verbose=0)  # the dataset shuffles and repeats itself
    h = hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in model.get_weights()))
    print(f"weights={h.hexdigest()[:16]}")


if __name__ == "__main__":
    main()
