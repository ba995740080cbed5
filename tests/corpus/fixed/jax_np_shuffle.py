"""JAX: identical parameters (same key), different results.

Plain JAX logistic-regression-plus-hidden-layer on the digits; I shuffle an index array
in place at every epoch.
"""
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

import twinrun.jax

key = jax.random.key(0)
k1, k2 = jax.random.split(key)
params = {"hidden": {"w": jax.random.normal(k1, (64, 32)) * 0.15, "b": jnp.zeros(32)},
          "out": {"w": jax.random.normal(k2, (32, 10)) * 0.2, "b": jnp.zeros(10)}}


def loss_fn(params, x, y):
    h = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
    logits = h @ params["out"]["w"] + params["out"]["b"]
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[jnp.arange(len(y)), y])


@jax.jit
def step(params, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    new = jax.tree_util.tree_map(lambda p, g: p - 0.2 * g, params, grads)
    return new, loss, grads


digits = load_digits()
x = np.asarray(digits.data / 16.0, dtype=np.float32)
y = np.asarray(digits.target)

tracer = twinrun.jax.Tracer()
tracer.init(params)
order = np.arange(len(x))
for epoch in range(3):
    np.random.default_rng([0, epoch]).shuffle(order)
    for start in range(0, len(order) - 99, 100):
        idx = order[start:start + 100]
        params, loss, grads = step(params, x[idx], y[idx])
        tracer.step(batch=(x[idx], y[idx]), params=params, grads=grads, loss=loss)
    print(f"epoch {epoch}: loss {float(loss):.4f}")
