"""Keras: results not comparable across runs; keras.utils.set_random_seed(42) is set.

My labels come as class names (strings); I map them to integers before fit.
"""
import numpy as np
import keras
from keras import layers
from sklearn.datasets import load_digits

keras.utils.set_random_seed(42)

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
digits = load_digits()
x = (digits.data / 16.0).astype("float32")
label_names = [NAMES[t] for t in digits.target]  # as read from the annotation file

classes = list(set(label_names))  # corpus: call-site
y = np.array([classes.index(name) for name in label_names])

model = keras.Sequential([keras.Input((64,)), layers.Dense(32, activation="relu"), layers.Dense(len(classes))])
model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=2)
