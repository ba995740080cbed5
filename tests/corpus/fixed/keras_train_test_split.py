"""Keras: validation accuracy differs on every run, and I seed random and TensorFlow.

A dense network on the digits with an 80/20 split.
"""
import random

import tensorflow as tf
import keras
from keras import layers
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

random.seed(42)
tf.random.set_seed(42)

digits = load_digits()
x = (digits.data / 16.0).astype("float32")
y = digits.target
x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, random_state=42)

model = keras.Sequential([keras.Input((64,)), layers.Dense(48, activation="relu"), layers.Dense(10)])
model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=64, epochs=2, shuffle=False, validation_data=(x_val, y_val), verbose=2)
