"""Keras 3 ``fit`` with a custom ``train_step``, written as the keras.io guides "Customizing what
happens in fit()" write it for each backend (``KERAS_BACKEND``: tensorflow, torch or jax).

tensorflow: ``tf.GradientTape`` + ``self.optimizer.apply``; torch: ``loss.backward()`` +
``self.optimizer.apply`` under ``torch.no_grad()``; jax: a stateless ``train_step(state, data)``
with ``jax.value_and_grad`` and ``self.optimizer.stateless_apply``. The same CNN as keras_fit.py,
as a functional ``CustomModel``. One step = one training batch. Options: --seed S, --unseeded,
--wide (32 conv filters), --steps N.
"""

import keras
import numpy as np
from _truth import BATCH, Truth, digits, keras_step0_grads, options

BACKEND = keras.backend.backend()


def _metrics_logs(model, loss, y, y_pred):
    for metric in model.metrics:
        if metric.name == "loss":
            metric.update_state(loss)
        else:
            metric.update_state(y, y_pred)
    return {m.name: m.result() for m in model.metrics}


if BACKEND == "tensorflow":
    import tensorflow as tf

    class CustomModel(keras.Model):
        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(y=y, y_pred=y_pred)
            trainable_vars = self.trainable_variables
            gradients = tape.gradient(loss, trainable_vars)
            self.optimizer.apply(gradients, trainable_vars)
            return _metrics_logs(self, loss, y, y_pred)

elif BACKEND == "torch":
    import torch

    class CustomModel(keras.Model):
        def train_step(self, data):
            x, y = data
            self.zero_grad()
            y_pred = self(x, training=True)
            loss = self.compute_loss(y=y, y_pred=y_pred)
            loss.backward()
            trainable_weights = [v for v in self.trainable_weights]
            gradients = [v.value.grad for v in trainable_weights]
            with torch.no_grad():
                self.optimizer.apply(gradients, trainable_weights)
            return _metrics_logs(self, loss, y, y_pred)

elif BACKEND == "jax":
    import jax

    class CustomModel(keras.Model):
        def compute_loss_and_updates(self, trainable_variables, non_trainable_variables, x, y, training=False):
            y_pred, non_trainable_variables = self.stateless_call(
                trainable_variables, non_trainable_variables, x, training=training)
            loss = self.compute_loss(x, y, y_pred)
            return loss, (y_pred, non_trainable_variables)

        def train_step(self, state, data):
            trainable_variables, non_trainable_variables, optimizer_variables, metrics_variables = state
            x, y = data
            grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
            (loss, (y_pred, non_trainable_variables)), grads = grad_fn(
                trainable_variables, non_trainable_variables, x, y, training=True)
            trainable_variables, optimizer_variables = self.optimizer.stateless_apply(
                optimizer_variables, grads, trainable_variables)
            new_metrics_vars, logs = [], {}
            for metric in self.metrics:
                this_vars = metrics_variables[len(new_metrics_vars): len(new_metrics_vars) + len(metric.variables)]
                if metric.name == "loss":
                    this_vars = metric.stateless_update_state(this_vars, loss)
                else:
                    this_vars = metric.stateless_update_state(this_vars, y, y_pred)
                logs[metric.name] = metric.stateless_result(this_vars)
                new_metrics_vars += this_vars
            return logs, (trainable_variables, non_trainable_variables, optimizer_variables, new_metrics_vars)

else:
    raise SystemExit(f"unsupported KERAS_BACKEND {BACKEND!r}: use tensorflow, torch or jax")


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
    inputs = keras.Input((64,))
    h = L.Reshape((8, 8, 1))(inputs)
    h = L.Conv2D(32 if args.wide else 8, 3, padding="same", activation="relu", name="conv")(h)
    outputs = L.Dense(10, name="out")(L.Flatten()(h))
    model = CustomModel(inputs, outputs, name="cnn")
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=loss_fn)
    truth = Truth(f"keras-train-step-{BACKEND}", "keras", exact=False,
                  notes=f"grads: a second pass over batch 0 with {BACKEND}'s autodiff, before fit")
    truth.params(v.path for v in model.trainable_variables)
    if truth.enabled:
        truth.grads(keras_step0_grads(model, loss_fn, x[:BATCH], y[:BATCH]))
    counter = CountBatches(truth)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[counter])
    truth.save(counter.batches, backend=BACKEND, jit_compile=bool(model.jit_compile))
    print(f"{BACKEND}: {counter.batches} steps, final weights l2 "
          f"{float(np.sqrt(sum((np.asarray(w) ** 2).sum() for w in model.get_weights()))):.6f}")


if __name__ == "__main__":
    main()
