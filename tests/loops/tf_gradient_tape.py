"""TensorFlow custom loop: ``tf.GradientTape`` in a ``@tf.function`` step, a Keras model and optimizer.

The TensorFlow "Writing a training loop from scratch" guide's loop: ``tape.gradient`` then
``optimizer.apply_gradients``; no ``fit``, so there is no train-batch callback. One step = one
``apply_gradients``. Options: --seed S (``keras.utils.set_random_seed``), --unseeded, --wide
(32 conv filters), --steps N.
"""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"  # a GradientTape loop is TensorFlow code

import keras
import tensorflow as tf
from _truth import BATCH, Truth, digits, keras_step0_grads, options


def main() -> None:
    args = options(__doc__)
    if not args.unseeded:
        keras.utils.set_random_seed(args.seed)
    x, y = digits()
    L = keras.layers
    model = keras.Sequential([keras.Input((64,)), L.Reshape((8, 8, 1)),
                              L.Conv2D(32 if args.wide else 8, 3, padding="same", activation="relu", name="conv"),
                              L.Flatten(), L.Dense(10, name="out")], name="cnn")
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).take(args.steps)
    truth = Truth("tf-gradient-tape", "tensorflow", exact=False,
                  notes="grads: a second GradientTape pass over batch 0 (in a tf.function), before training")
    truth.params(v.path for v in model.trainable_variables)
    if truth.enabled:
        truth.grads(keras_step0_grads(model, loss_fn, x[:BATCH], y[:BATCH]))

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            logits = model(xb, training=True)
            loss = loss_fn(yb, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    steps = 0
    for xb, yb in dataset:
        loss = train_step(xb, yb)
        if steps == 0:
            truth.loss(loss)
        steps += 1
    truth.save(steps)
    print(f"{steps} steps, final loss {float(loss):.4f}")


if __name__ == "__main__":
    main()
