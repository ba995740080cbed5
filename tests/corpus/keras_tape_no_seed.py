"""Custom training loop (tf.GradientTape): same script on two desktops, different weights.

I seed NumPy and TensorFlow at the top. My colleague runs the same file and gets other
weights, and so do I when I run it twice.
"""
import numpy as np
import tensorflow as tf
import keras
from keras import layers
from sklearn.datasets import load_digits

import twinrun.keras

np.random.seed(0)
tf.random.set_seed(0)

digits = load_digits()
x = (digits.data / 16.0).astype("float32")
y = digits.target.astype("int32")


def build_model():
    return keras.Sequential([keras.Input((64,)), layers.Dense(64, activation="relu"),
                             layers.Dense(32, activation="relu"), layers.Dense(10)])


model = build_model()  # corpus: call-site
optimizer = keras.optimizers.Adam(1e-3)
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

tracer = twinrun.keras.Tracer(model)
tracer.init()
for epoch in range(2):
    for start in range(0, len(x), 128):
        xb, yb = x[start:start + 128], y[start:start + 128]
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        tracer.step(batch=(xb, yb), loss=loss, grads=grads)
    print(f"epoch {epoch}: loss {float(loss):.4f}")
