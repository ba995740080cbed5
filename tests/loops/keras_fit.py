"""Keras 3 ``model.fit`` on the backend named by ``KERAS_BACKEND`` (tensorflow, torch or jax).

A small Sequential CNN on the 8x8 digits, SGD with momentum, ``shuffle=False`` (a fixed data
order), one epoch of ``--steps`` batches. One step = one training batch. Options: --seed S
(``keras.utils.set_random_seed``), --unseeded, --wide (32 conv filters instead of 8: the conv's
kernel gradient then depends on the thread count on every backend; see README.md), --steps N.
"""

import keras
import numpy as np
from _truth import BATCH, Truth, digits, keras_step0_grads, options


class CountBatches(keras.callbacks.Callback):
    def __init__(self, truth: Truth):
        super().__init__()
        self.truth, self.batches = truth, 0

    def on_train_batch_end(self, batch, logs=None):
        if self.batches == 0:
            self.truth.loss(logs["loss"])
        self.batches += 1


def main() -> None:
    args = options(__doc__)
    if not args.unseeded:
        keras.utils.set_random_seed(args.seed)
    x, y = digits()
    x, y = x[: args.steps * BATCH], y[: args.steps * BATCH]
    L = keras.layers
    model = keras.Sequential([keras.Input((64,)), L.Reshape((8, 8, 1)),
                              L.Conv2D(32 if args.wide else 8, 3, padding="same", activation="relu", name="conv"),
                              L.Flatten(), L.Dense(10, name="out")], name="cnn")
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=loss_fn)
    backend = keras.backend.backend()
    truth = Truth(f"keras-fit-{backend}", "keras", exact=False,
                  notes=f"grads: a second pass over batch 0 with {backend}'s autodiff, before fit")
    truth.params(v.path for v in model.trainable_variables)
    if truth.enabled:
        truth.grads(keras_step0_grads(model, loss_fn, x[:BATCH], y[:BATCH]))
    counter = CountBatches(truth)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[counter])
    truth.save(counter.batches, backend=backend, jit_compile=bool(model.jit_compile))
    print(f"{backend}: {counter.batches} steps, final weights l2 "
          f"{float(np.sqrt(sum((np.asarray(w) ** 2).sum() for w in model.get_weights()))):.6f}")


if __name__ == "__main__":
    main()
