"""Keras: I pass a seed to every initializer, yet the model differs on every run.

Same data, same hyperparameters, `shuffle=False`, and tf.random.set_seed(0).
The accuracy after two epochs still moves between runs.
"""
import numpy as np
import tensorflow as tf
import keras
from keras import layers
from sklearn.datasets import load_digits

tf.random.set_seed(0)
np.random.seed(0)

digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., None]
y = digits.target

glorot = keras.initializers.GlorotUniform
model = keras.Sequential([
    keras.Input((8, 8, 1)),
    layers.Conv2D(8, 3, activation="relu", kernel_initializer=glorot(seed=1)),
    layers.MaxPooling2D(),
    layers.Flatten(),
    layers.Dense(32, activation="relu", kernel_initializer=glorot(seed=2)),
    layers.Dense(10, kernel_initializer="glorot_uniform"),  # corpus: call-site
])
model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
history = model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
print("accuracy", history.history["accuracy"][-1])
