"""Reproducible (flax.linen + optax): a CNN with dropout; every key split from one seed."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from sklearn.datasets import load_digits

import twinrun.jax


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x, train):
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.Dropout(0.1, deterministic=not train)(x)
        return nn.Dense(10)(x)


params_key, dropout_key, shuffle_key = jax.random.split(jax.random.key(42), 3)
digits = load_digits()
x = jnp.asarray(digits.images[..., None] / 16.0, dtype=jnp.float32)
y = jnp.asarray(digits.target)

model = CNN()
params = model.init(params_key, x[:1], train=False)
tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(2e-3))
opt_state = tx.init(params)


@jax.jit
def train_step(params, opt_state, xb, yb, key):
    def loss_fn(p):
        logits = model.apply(p, xb, train=True, rngs={"dropout": key})
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, grads


tracer = twinrun.jax.Tracer()
tracer.init(params)
n = 0
for epoch in range(2):
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), len(x)))
    for start in range(0, len(x) - 127, 128):
        idx = perm[start:start + 128]
        params, opt_state, loss, grads = train_step(params, opt_state, x[idx], y[idx],
                                                    jax.random.fold_in(dropout_key, n))
        tracer.step(batch=(x[idx], y[idx]), params=params, grads=grads, loss=loss)
        n += 1
    print(f"epoch {epoch}: loss {float(loss):.6f}")
