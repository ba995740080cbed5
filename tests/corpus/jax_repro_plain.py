"""Reproducible (plain JAX): explicit keys for init, shuffling and dropout."""
import jax
import jax.numpy as jnp
from sklearn.datasets import load_digits

import twinrun.jax

root = jax.random.key(0)
init_key, data_key, dropout_key = jax.random.split(root, 3)


def init(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    return [(jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), jnp.zeros(b))
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def loss_fn(params, x, y, key):
    for i, (w, b) in enumerate(params[:-1]):
        x = jax.nn.relu(x @ w + b)
        keep = jax.random.bernoulli(jax.random.fold_in(key, i), 0.9, x.shape)
        x = jnp.where(keep, x / 0.9, 0.0)
    w, b = params[-1]
    logits = x @ w + b
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])


@jax.jit
def step(params, x, y, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, key)
    return jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads), loss, grads


digits = load_digits()
x = jnp.asarray(digits.data / 16.0, dtype=jnp.float32)
y = jnp.asarray(digits.target)
params = init(init_key, [64, 96, 48, 10])

tracer = twinrun.jax.Tracer()
tracer.init(params)
n_step = 0
for epoch in range(2):
    perm = jax.random.permutation(jax.random.fold_in(data_key, epoch), len(x))
    for start in range(0, len(x) - 63, 64):
        idx = perm[start:start + 64]
        params, loss, grads = step(params, x[idx], y[idx], jax.random.fold_in(dropout_key, n_step))
        tracer.step(batch=(x[idx], y[idx]), params=params, grads=grads, loss=loss)
        n_step += 1
    print(f"epoch {epoch}: loss {float(loss):.6f}")
