"""JAX + optax: the same key, the same data, and my runs still differ.

The features come as a table of named columns (a dict of arrays, as from a CSV); I drop
the label column and stack the rest into a matrix.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import twinrun.jax

digits = load_digits()
table = {f"pixel_{r}_{c}": digits.images[:, r, c] / 16.0 for r in range(8) for c in range(8)}
table["label"] = digits.target

X = np.stack([table[name] for name in set(table) - {"label"}], axis=1).astype(np.float32)  # corpus: call-site
Y = np.asarray(table["label"])

k1, k2 = jax.random.split(jax.random.key(0))
params = {"w1": jax.random.normal(k1, (64, 32)) * 0.15, "b1": jnp.zeros(32),
          "w2": jax.random.normal(k2, (32, 10)) * 0.2, "b2": jnp.zeros(10)}
tx = optax.sgd(0.1, momentum=0.9)
opt_state = tx.init(params)


def loss_fn(p, x, y):
    logits = jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@jax.jit
def update(p, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(p, updates), opt_state, loss, grads


tracer = twinrun.jax.Tracer()
tracer.init(params)
for epoch in range(2):
    for start in range(0, len(X) - 127, 128):
        xb, yb = X[start:start + 128], Y[start:start + 128]
        params, opt_state, loss, grads = update(params, opt_state, xb, yb)
        tracer.step(batch=(xb, yb), params=params, grads=grads, loss=loss)
    print(f"epoch {epoch}: loss {float(loss):.4f}")
