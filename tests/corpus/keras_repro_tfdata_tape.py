"""Reproducible (tf.data + tf.GradientTape loop): seeded shuffle, a seeded tf.random.Generator
for the augmentation, and keras.utils.set_random_seed for the layers."""
import tensorflow as tf
import keras
from keras import layers
from sklearn.datasets import load_digits

import twinrun.keras

keras.utils.set_random_seed(0)
aug_rng = tf.random.Generator.from_seed(1)

digits = load_digits()
x = (digits.data / 16.0).astype("float32")
y = digits.target.astype("int32")
ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(2048, seed=2).batch(64)

model = keras.Sequential([keras.Input((64,)), layers.Dense(64, activation="relu"), layers.Dense(10)])
optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

tracer = twinrun.keras.Tracer(model)
tracer.init()
for epoch in range(2):
    for xb, yb in ds:
        xb = xb + aug_rng.normal(tf.shape(xb), stddev=0.05)
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        tracer.step(batch=(xb, yb), loss=loss, grads=grads)
    print(f"epoch {epoch}: loss {float(loss):.6f}")
