"""Flax + optax: I draw a seed per experiment and log it, but I cannot get any run back.

A small linen CNN on the digits with Adam.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from sklearn.datasets import load_digits

import twinrun.jax


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(10)(x)


seed = np.random.randint(0, 2**31 - 1)  # corpus: call-site
print("experiment seed", seed)

digits = load_digits()
x = jnp.asarray(digits.images[..., None] / 16.0, dtype=jnp.float32)
y = jnp.asarray(digits.target)

model = CNN()
params = model.init(jax.random.key(seed), x[:1])
tx = optax.adam(1e-3)
opt_state = tx.init(params)


@jax.jit
def train_step(params, opt_state, xb, yb):
    def loss_fn(p):
        logits = model.apply(p, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, grads


tracer = twinrun.jax.Tracer()
tracer.init(params)
for epoch in range(2):
    for start in range(0, len(x) - 127, 128):
        xb, yb = x[start:start + 128], y[start:start + 128]
        params, opt_state, loss, grads = train_step(params, opt_state, xb, yb)
        tracer.step(batch=(xb, yb), params=params, grads=grads, loss=loss)
    print(f"epoch {epoch}: loss {float(loss):.4f}")
