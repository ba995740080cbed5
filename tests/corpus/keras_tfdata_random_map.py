"""tf.data + Keras: my augmentation makes every run different, even with seeded layers.

Random brightness in a Dataset.map, then Keras fit.
"""
import tensorflow as tf
import keras
from keras import layers
from sklearn.datasets import load_digits

digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., None]
y = digits.target


def augment(img, label):
    img = tf.image.random_brightness(img, max_delta=0.1)  # corpus: call-site
    return img, label


ds = tf.data.Dataset.from_tensor_slices((x, y)).map(augment).batch(64)

model = keras.Sequential([
    keras.Input((8, 8, 1)),
    layers.Conv2D(8, 3, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed=7)),
    layers.Flatten(),
    layers.Dense(10, kernel_initializer=keras.initializers.GlorotUniform(seed=8)),
])
model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(ds, epochs=2, verbose=2)
