"""Flax NNX + optax: results not comparable across runs.

nnx.Rngs(0) for the model, a fixed batch order, and Gaussian input noise for robustness.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import twinrun.jax


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(64, 48, rngs=rngs)
        self.out = nnx.Linear(48, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


model = MLP(nnx.Rngs(0))
optimizer = nnx.Optimizer(model, optax.adam(2e-3), wrt=nnx.Param)


@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss, grads


digits = load_digits()
x = (digits.data / 16.0).astype(np.float32)
y = digits.target

tracer = twinrun.jax.Tracer()
tracer.init(nnx.state(model, nnx.Param))
for epoch in range(2):
    for start in range(0, len(x) - 63, 64):
        noise = np.random.normal(0.0, 0.05, size=(64, 64))  # corpus: call-site
        xb = jnp.asarray(x[start:start + 64] + noise, dtype=jnp.float32)
        yb = jnp.asarray(y[start:start + 64])
        loss, grads = train_step(model, optimizer, xb, yb)
        tracer.step(batch=(xb, yb), params=nnx.state(model, nnx.Param), grads=grads, loss=loss)
    print(f"epoch {epoch}: loss {float(loss):.4f}")
