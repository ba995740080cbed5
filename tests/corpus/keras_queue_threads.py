"""Keras: my results are not comparable across runs, with keras.utils.set_random_seed(0).

Samples are produced by a few loader threads into a queue (the real ones read shards
from disk) and I fit on what comes out, without shuffling.
"""
import os
import queue
import threading
import time

import numpy as np
import keras
from keras import layers
from sklearn.datasets import load_digits

keras.utils.set_random_seed(0)

digits = load_digits()
samples = queue.Queue()


def producer(shard):
    for i in shard:
        time.sleep(os.urandom(1)[0] / 255 * 0.001)  # disk latency
        samples.put((i, digits.data[i] / 16.0, digits.target[i]))


shards = np.array_split(np.arange(len(digits.target)), 4)
threads = [threading.Thread(target=producer, args=(shard,)) for shard in shards]
for t in threads:
    t.start()
received = []
for _ in range(len(digits.target)):
    received.append(samples.get())  # corpus: call-site
for t in threads:
    t.join()
x = np.array([s[1] for s in received], dtype="float32")
y = np.array([s[2] for s in received])

model = keras.Sequential([keras.Input((64,)), layers.Dense(64, activation="relu"), layers.Dense(10)])
model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=2)
