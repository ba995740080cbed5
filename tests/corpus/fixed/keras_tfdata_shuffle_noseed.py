"""tf.data + Keras fit: the same notebook gives another accuracy on every run.

I gave every layer an initializer with a seed, so the initial weights repeat; the
input pipeline is a plain from_tensor_slices -> shuffle -> batch.
"""
import tensorflow as tf
import keras
from keras import layers
from sklearn.datasets import load_digits

digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., None]
y = digits.target

ds = tf.data.Dataset.from_tensor_slices((x, y))
ds = ds.shuffle(1024, seed=0)
ds = ds.batch(64).prefetch(2)

he = keras.initializers.HeNormal
model = keras.Sequential([
    keras.Input((8, 8, 1)),
    layers.Conv2D(8, 3, padding="same", activation="relu", kernel_initializer=he(seed=1)),
    layers.GlobalAveragePooling2D(),
    layers.Dense(10, kernel_initializer=he(seed=2)),
])
model.compile(optimizer=keras.optimizers.Adam(3e-3),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
model.fit(ds, epochs=2, verbose=2)
