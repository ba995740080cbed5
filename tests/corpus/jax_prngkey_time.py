"""JAX: a fresh key every run so that my experiments are 'independent' -- now none repeats.

Plain JAX MLP on the digits, SGD with jax.grad.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

import twinrun.jax

key = jax.random.PRNGKey(int(time.time()))  # corpus: call-site


def init(key, sizes):
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        params.append((jax.random.normal(sub, (n_in, n_out)) * jnp.sqrt(2.0 / n_in), jnp.zeros(n_out)))
    return params


def predict(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def loss_fn(params, x, y):
    return -jnp.mean(jax.nn.log_softmax(predict(params, x))[jnp.arange(len(y)), y])


@jax.jit
def sgd_step(params, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    return jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads), loss, grads


digits = load_digits()
x = jnp.asarray(digits.data / 16.0, dtype=jnp.float32)
y = jnp.asarray(digits.target)
params = init(key, [64, 64, 10])

tracer = twinrun.jax.Tracer()
tracer.init(params)
for epoch in range(3):
    for start in range(0, len(x) - 63, 64):
        xb, yb = x[start:start + 64], y[start:start + 64]
        params, loss, grads = sgd_step(params, xb, yb)
        tracer.step(batch=(xb, yb), params=params, grads=grads, loss=loss)
    print(f"epoch {epoch}: loss {float(loss):.4f}")
print("checksum", float(sum(np.abs(np.asarray(w)).sum() for w, _ in params)))
